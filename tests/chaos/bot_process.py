"""The real bot as a subprocess (`python -m bot run`) and the environment that points it at the fakes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from tests.chaos.fakes import RUNCOMFY_TOKEN, World
from tests.fakediscord import FakeDiscord


def bot_environment(world: World, workdir: Path, **extra: str) -> dict[str, str]:
    """A clean environment (no inherited tokens, no .env: cwd is `workdir`) pointing the bot at the fakes, with a
    SQLite file in `workdir`, quick polling, and neither a request budget nor the operator's caps holding the
    chaos back."""
    environment = runcomfy_and_discord_environment(
        world.fake, world.emulator.url, RUNCOMFY_TOKEN, [guild.id for guild in world.guilds]
    )
    environment.update(
        {
            "RUNCOMFY_REQUESTS_PER_SECOND": "200",
            "DATABASE_PATH": str(workdir / "imagine.sqlite3"),
            "POLL_MIN_INTERVAL_SECONDS": "0.05",
            "POLL_MAX_INTERVAL_SECONDS": "0.25",
            "LOG_LEVEL": "INFO",
            # The operator's caps (200 images a day by default) would refuse the long runs' later commands.
            "BUDGET_IMAGES_PER_DAY": "0",
            "BUDGET_USD_PER_DAY": "0",
            "BUDGET_USD_PER_MONTH": "0",
        }
    )
    environment.update(extra)
    return environment


def runcomfy_and_discord_environment(
    fake: FakeDiscord, runcomfy_url: str, runcomfy_token: str, guild_ids: Sequence[int]
) -> dict[str, str]:
    """The environment of a `python -m bot run` child: this process's variables less every token and setting of
    the bot's services, plus the fake Discord (commands synced to `guild_ids`) and the emulator at `runcomfy_url`.
    Everything else keeps its production default (benchmarks add their own budget and database)."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("RUNCOMFY_", "DISCORD_"))}
    environment.update(
        {
            "DISCORD_TOKEN": fake.bot_token,
            "DISCORD_API_BASE_URL": fake.rest_base,
            "DISCORD_GATEWAY_URL": fake.gateway_url,
            "DISCORD_GUILD_IDS": ",".join(str(guild_id) for guild_id in guild_ids),
            "RUNCOMFY_BASE_URL": runcomfy_url,
            "RUNCOMFY_API_TOKEN": runcomfy_token,
            "PYTHONUNBUFFERED": "1",
        }
    )
    return environment


class BotProcess:
    """`python -m bot run` (or `command`, a module that runs the bot) with its output in a log file; one per life."""

    def __init__(
        self,
        workdir: Path,
        environment: dict[str, str],
        number: int,
        *,
        command: Sequence[str] = ("-m", "bot", "run"),
    ) -> None:
        self.log_path = workdir / f"bot-{number:03d}.log"
        self._environment = environment
        self._workdir = workdir
        self._command = tuple(command)
        self._log: IO[bytes] | None = None
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._log = self.log_path.open("wb")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, *self._command,
            cwd=self._workdir, env=self._environment, stdout=self._log, stderr=self._log,
        )  # fmt: skip

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("not started")
        return self.process.pid

    @property
    def exited(self) -> bool:
        return self.process is not None and self.process.returncode is not None

    async def stop(self, sig: int = signal.SIGKILL) -> int | None:
        """Send `sig` (SIGKILL by default: no cleanup runs) and wait for the exit."""
        if self.process is None:
            return None
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)
        try:
            code = await asyncio.wait_for(self.process.wait(), 15)
        except TimeoutError:
            self.process.kill()
            code = await self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
