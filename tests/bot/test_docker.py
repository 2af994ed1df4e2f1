"""The container: the Dockerfile's promises checked, its commands run locally, and the image built where Docker can.

Building needs a Docker daemon and network access to pull the base image; where
either is missing that test skips. The local run always happens: the
Dockerfile's own ENTRYPOINT, CMD and HEALTHCHECK, with its ENV, from an empty
working directory, against the fake Discord and the emulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest
import yaml

from bot.emulator import Emulator
from bot.settings import Settings
from tests.bot.conftest import TOKEN
from tests.fakediscord import FakeDiscord, FakeGuild

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "imagine-bot:test"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"no {keyword} in stage {self.name or self.base}"
        return found[-1]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for args in self.all("ENV"):
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                values[key] = value
        return values


def dockerfile_stages(text: str) -> list[Stage]:
    """The Dockerfile's stages and their instructions (continuations joined, comments dropped)."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            words = rest.split()
            base = words[0]
            for name, value in args.items():
                base = base.replace("${" + name + "}", value)
            stages.append(Stage(base, words[2] if len(words) > 2 and words[1].upper() == "AS" else None))
        else:
            stages[-1].instructions.append((keyword, rest))
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return dockerfile_stages((ROOT / "Dockerfile").read_text(encoding="utf-8"))


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"{args} is not the exec (JSON) form"
    return [str(item) for item in value]


def test_dockerfile_builds_in_one_stage_and_runs_slim_as_non_root(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    build, runtime = stages[0], stages[-1]
    assert "-slim" in runtime.base
    assert any("pip install" in run for run in build.all("RUN"))
    assert not any("pip install" in run for run in runtime.all("RUN"))
    assert any(copy.startswith(f"--from={build.name}") for copy in runtime.all("COPY"))
    user = runtime.last("USER").split(":")[0]
    assert user.isdigit()
    assert int(user) != 0
    assert any(f"--uid {user}" in run for run in runtime.all("RUN"))


def test_dockerfile_keeps_data_on_a_volume_and_asks_the_bot_for_health(stages: list[Stage]) -> None:
    runtime = stages[-1]
    env = runtime.env()
    data = str(PurePosixPath(env["DATABASE_PATH"]).parent)
    assert exec_form(runtime.last("VOLUME")) == [data]
    assert env["TMPDIR"] == data  # the only writable place under a read-only root
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["HEALTH_PORT"].isdigit()
    assert env["HEALTH_HOST"] == "127.0.0.1"
    healthcheck = runtime.last("HEALTHCHECK")
    options, _, command = healthcheck.partition("CMD ")
    assert exec_form(command) == ["python", "-m", "bot", "health"]
    assert "--interval=" in options
    assert exec_form(runtime.last("ENTRYPOINT")) == ["python", "-m", "bot"]
    assert exec_form(runtime.last("CMD")) == ["run"]
    assert runtime.last("STOPSIGNAL") == "SIGTERM"


def test_only_the_code_goes_into_the_image_and_compose_mounts_the_data(stages: list[Stage]) -> None:
    ignore = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert ignore[0] == "*"  # everything out, then an allowlist: .env and data/ can never slip in
    assert not any(line.startswith("!") and (".env" in line or "data" in line) for line in ignore)
    compose = (ROOT / "docker-compose.yml").read_text()
    data = str(PurePosixPath(stages[-1].env()["DATABASE_PATH"]).parent)
    assert "env_file: .env" in compose
    assert f"imagine-data:{data}" in compose
    assert "read_only: true" in compose
    assert "stop_grace_period:" in compose


# -- the Dockerfile's commands, run here ----------------------------------------------


def local_command(command: list[str]) -> list[str]:
    """The image's `python` is this virtualenv's interpreter."""
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


async def run(command: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *local_command(command), env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_the_images_commands_run_from_an_empty_workdir_writing_only_to_data(
    stages: list[Stage], tmp_path: Path, fake_discord: FakeDiscord, guild: FakeGuild, emulator: Emulator
) -> None:
    runtime = stages[-1]
    image_env = runtime.env()
    data, workdir = tmp_path / "data", tmp_path / "app"
    data.mkdir()
    workdir.mkdir()
    image_data = str(PurePosixPath(image_env["DATABASE_PATH"]).parent)
    env = {key: value.replace(image_data, str(data)) for key, value in image_env.items() if key != "PATH"}
    env.update(
        PATH=os.environ["PATH"],
        HEALTH_PORT=str(_free_port()),
        DISCORD_TOKEN=fake_discord.bot_token,
        RUNCOMFY_API_TOKEN=TOKEN,
        RUNCOMFY_BASE_URL=emulator.url,
        DISCORD_API_BASE_URL=fake_discord.rest_base,
        DISCORD_GATEWAY_URL=fake_discord.gateway_url,
        DISCORD_GUILD_IDS=str(guild.id),
    )
    entrypoint = exec_form(runtime.last("ENTRYPOINT"))
    healthcheck = exec_form(runtime.last("HEALTHCHECK").partition("CMD ")[2])

    code, output = await run([*entrypoint, "check"], env, workdir)  # `docker compose run --rm bot check`
    assert code == 0, output
    assert "not created yet; `python -m bot run` creates it (its folder is writable)" in output
    assert not (data / "imagine.sqlite3").exists()  # the doctor only looks; `run` creates the database

    code, output = await run(healthcheck, env, workdir)
    assert code == 1  # nothing answers yet: unhealthy, not a crash
    assert output.startswith("unhealthy:")

    log_path = tmp_path / "bot.log"
    with log_path.open("wb") as log_file:
        bot = await asyncio.create_subprocess_exec(
            *local_command([*entrypoint, *exec_form(runtime.last("CMD"))]),
            env=env,
            cwd=workdir,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log_file,
        )
        try:
            async with asyncio.timeout(30):
                while (await run(healthcheck, env, workdir))[0] != 0:
                    assert bot.returncode is None, log_path.read_text()
                    await asyncio.sleep(0.2)
            bot.send_signal(getattr(signal, runtime.last("STOPSIGNAL")))
            assert await asyncio.wait_for(bot.wait(), 10) == 0, log_path.read_text()
        finally:
            if bot.returncode is None:
                bot.kill()
                await bot.wait()
    assert list(workdir.iterdir()) == []  # a read-only root would have refused any write here


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- the real image, where Docker can build it -----------------------------------------


def _docker(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)  # noqa: S603, S607


@pytest.mark.skipif(shutil.which("docker") is None, reason="docker is not installed")
def test_the_image_builds_and_runs_as_non_root_on_a_read_only_root(stages: list[Stage]) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        if _docker("info", timeout=15).returncode == 0:
            base = stages[-1].base
            if _docker("image", "inspect", base, timeout=15).returncode != 0:
                try:
                    pulled = _docker("pull", base, timeout=90)
                except subprocess.TimeoutExpired:
                    pytest.skip(f"pulling {base} takes too long here")
                if pulled.returncode != 0:
                    pytest.skip(f"cannot pull {base}: {pulled.stderr.strip()[:200]}")
            try:
                built = _docker("build", "-t", IMAGE, str(ROOT), timeout=300)
            except subprocess.TimeoutExpired:
                pytest.skip("docker build takes too long here (no network for pip?)")
            assert built.returncode == 0, built.stderr[-2000:]
            user = _docker("run", "--rm", "--read-only", "--entrypoint", "id", IMAGE, "-u", timeout=60)
            assert user.stdout.strip() == stages[-1].last("USER").split(":")[0]
            helped = _docker("run", "--rm", "--read-only", IMAGE, "--help", timeout=60)
            assert helped.returncode == 0
            assert "check" in helped.stdout
            probe = _docker("run", "--rm", "--read-only", IMAGE, "health", timeout=60)
            assert probe.returncode == 1  # HEALTH_PORT is set in the image; no bot runs in this container
            return
    pytest.skip("docker has no daemon here (`docker info` failed)")


# -- several processes on PostgreSQL (docker-compose.postgres.yml) ----------------------------


def compose_services() -> dict[str, dict[str, object]]:
    """The services of docker-compose.postgres.yml, anchors and merge keys resolved as Compose does."""
    loaded = yaml.safe_load((ROOT / "docker-compose.postgres.yml").read_text())
    services: dict[str, dict[str, object]] = loaded["services"]
    return services


def test_the_postgres_compose_file_runs_three_processes_over_every_shard_once() -> None:
    services = compose_services()
    bots = {name: service for name, service in services.items() if name.startswith("bot-")}
    assert len(bots) == 3
    settings = []
    for name, service in bots.items():
        environment = service["environment"]
        assert isinstance(environment, dict)
        environment = {key: str(value) for key, value in environment.items()}
        url = urlsplit(environment["DATABASE_URL"])
        assert (url.hostname, url.port) == ("postgres", 5432), name
        assert service["depends_on"] == {"postgres": {"condition": "service_healthy"}}
        assert service["read_only"] is True
        settings.append(Settings(_env_file=None, **{key.lower(): value for key, value in environment.items()}))  # type: ignore[arg-type]
    counts = {s.shard_count for s in settings}
    assert len(counts) == 1, "every process needs the same SHARD_COUNT"
    shards = [shard for s in settings for shard in s.owned_shards or []]
    assert sorted(shards) == list(range(counts.pop() or 0)), "disjoint, and together every shard"
    database = services["postgres"]
    assert "healthcheck" in database


def has_compose() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False, timeout=30)  # noqa: S607
    return probe.returncode == 0


@pytest.mark.skipif(not has_compose(), reason="needs the docker compose plugin")
def test_compose_accepts_the_postgres_file() -> None:
    result = subprocess.run(
        ["docker", "compose", "-f", "docker-compose.postgres.yml", "config", "--quiet"],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "DISCORD_TOKEN": "x", "RUNCOMFY_API_TOKEN": "x"},
    )
    if "env file" in result.stderr and ".env" in result.stderr:
        pytest.skip("docker compose wants the .env the file names; covered by the test above")
    assert result.returncode == 0, result.stderr
