"""The rules of the house that keep one owner for a job's life, checked on the source itself.

* `bot/jobs/` (the job manager, its line, poller and delivery stage) imports
  nothing from discord.py or `cogs/`: the CLI and the benchmarks drive the
  same machine.
* No module in `cogs/` writes a job: no call of the store's job writes, no use
  of the manager's ledger. Cogs ask the manager and render its events.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
JOB_WRITES = frozenset(
    {"transition", "create", "claim", "adopt", "renew", "release", "prune", "prune_inputs", "give_input"}
)


def modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).glob("*.py"))


def imported(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", modules("bot/jobs"), ids=lambda path: path.name)
def test_the_job_manager_knows_nothing_of_discord_or_the_cogs(path: Path) -> None:
    names = imported(ast.parse(path.read_text()))
    assert not {name for name in names if name.split(".")[0] in ("discord", "cogs")}


def job_writes(tree: ast.AST) -> list[str]:
    """Calls that write a job: the store's writes (a guild's settings are not a job), or the ledger's."""
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        target, method = ast.unparse(node.func.value), node.func.attr
        store_write = method in JOB_WRITES and not target.endswith("guilds")
        job_update = method == "update" and target.endswith("store")
        if store_write or job_update or "ledger" in target:
            found.append(ast.unparse(node.func))
    return found


@pytest.mark.parametrize("path", modules("cogs"), ids=lambda path: path.name)
def test_no_cog_writes_a_job(path: Path) -> None:
    tree = ast.parse(path.read_text())
    assert job_writes(tree) == []
    assert "bot.jobs.ledger" not in imported(tree)


def test_the_check_itself_finds_a_write() -> None:
    written = ast.parse("async def f(self):\n    await self.store.transition(1, 'x', expect='y', now=0)\n")
    assert job_writes(written) == ["self.store.transition"]
    settings = ast.parse("async def f(self):\n    await self.store.guilds.update(1, now=0)\n")
    assert job_writes(settings) == []
