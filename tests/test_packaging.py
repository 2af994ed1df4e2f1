"""The newcomer's path: the lock matches pyproject.toml, `make run` explains a missing .env, the README is consistent.

`make run` runs for real, with `make` itself, in an empty directory that has
the Makefile's inputs but no `.env` (never in the repository, where a
developer's own `.env` would start the bot).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def locked() -> dict[str, tuple[str, list[str]]]:
    """requirements.lock as {name: (version, hashes)}."""
    text = (ROOT / "requirements.lock").read_text()
    pins: dict[str, tuple[str, list[str]]] = {}
    for block in re.split(r"\n(?=\S)", text):
        match = re.match(r"([A-Za-z0-9_.\-]+)==([^\s;\\]+)", block)
        if match:
            name, version = match.groups()
            pins[canonicalize_name(name)] = (version, re.findall(r"--hash=sha256:([0-9a-f]{64})", block))
    return pins


def test_the_lock_pins_every_dependency_within_its_range_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(text) for text in project["dependencies"] + project["optional-dependencies"]["dev"]]
    pins = locked()
    assert len(pins) > len(wanted)  # the dependencies' own dependencies are pinned too
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in requirements.lock: run `make lock`"
        version, _ = pins[name]
        assert requirement.specifier.contains(version, prereleases=True), f"{name}=={version} is outside {requirement}"
    assert all(hashes for _, hashes in pins.values()), "every pin carries the hash of its files"


def test_the_installed_packages_are_the_locked_ones() -> None:
    """`make install` installs from the lock: what runs the tests is what the lock says."""
    from importlib.metadata import version

    for name in ("discord-py", "aiohttp", "yarl", "pillow", "pytest"):
        assert version(name) == locked()[name][0]


@pytest.fixture
def checkout_without_env(tmp_path: Path) -> Path:
    """The Makefile's inputs (mtimes kept, so nothing reinstalls) in a directory without .env."""
    for name in ("Makefile", "pyproject.toml", "requirements.lock", ".env.example"):
        shutil.copy2(ROOT / name, tmp_path / name)
    return tmp_path


def test_make_run_without_env_says_how_to_make_one(checkout_without_env: Path) -> None:
    if shutil.which("make") is None:
        pytest.fail("`make` is the README's first command: install it (apt-get install -y make)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "RUNCOMFY_", "MAKE"))}
    done = subprocess.run(  # noqa: S603 (a fixed command line)
        ["make", "--no-print-directory", "-o", "install", "run", f"VENV={ROOT / '.venv'}"],  # noqa: S607
        cwd=checkout_without_env,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert done.stdout == ""  # the bot never started
    assert "    cp .env.example .env" in done.stderr
    assert "DISCORD_TOKEN" in done.stderr
    assert "RUNCOMFY_API_TOKEN" in done.stderr
    assert "make emulator" in done.stderr


def test_the_readme_activates_the_venv_once_then_says_python_m_bot() -> None:
    readme = (ROOT / "README.md").read_text()
    assert readme.count(". .venv/bin/activate") == 1
    assert ".venv/bin/python -m bot" not in readme
    assert "python -m bot emulator" in readme
