"""The process entry point: logs, exit statuses and one-line errors, sharding, as an operator meets them."""

from __future__ import annotations

import asyncio
import inspect
import io
import json
import logging
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import discord
import pytest

from bot.app import ImagineBot, ShardedImagineBot, build_bot, shard_of
from bot.emulator import Emulator
from bot.jobs import RESTARTED_WHILE_SUBMITTING
from bot.logs import JsonFormatter, Redactor, setup_logging
from bot.settings import Settings
from bot.shutdown import handler_tasks
from storage.models import JobOrigin, JobState, NewJob
from storage.sqlite import SQLiteJobStore
from tests.bot.conftest import TOKEN
from tests.fakediscord import FakeDiscord, FakeGuild
from tests.fakediscord.runner import run_bot

ROOT = Path(__file__).resolve().parents[2]
INTERACTION_TOKEN = "aW50ZXJhY3Rpb246MTIzNDU2Nzg5MDpzZWNyZXQtdG9rZW4tdmFsdWU"


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, restored afterwards (pytest's own capture handlers included)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield root
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)


def test_json_logs_carry_the_job_id_and_never_a_secret(root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    setup_logging(level=logging.INFO, fmt="json", secrets=["discord-SECRET-1234", TOKEN], stream=stream)
    log = logging.getLogger("bot.jobs")
    log.info("job %d -> %s", 42, "in_queue", extra={"job_id": 42, "state": "in_queue"})
    log.warning("RunComfy said %s", f"bad key {TOKEN}")
    url = f"https://discord.com/api/v10/webhooks/1234567890/{INTERACTION_TOKEN}/messages/@original"
    logging.getLogger("discord.http").info("PATCH %s with %s has returned 200", url, "Bot discord-SECRET-1234")
    try:
        raise RuntimeError(f"boom with discord-SECRET-1234 at {url}")
    except RuntimeError:
        log.exception("job %d: unexpected error", 7, extra={"job_id": 7})
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert entries[0]["job_id"] == 42
    assert entries[0]["state"] == "in_queue"
    assert entries[0]["message"] == "job 42 -> in_queue"
    assert entries[0]["level"] == "INFO"
    assert entries[0]["logger"] == "bot.jobs"
    assert datetime.fromisoformat(entries[0]["time"]).tzinfo is not None
    assert "job_id" not in entries[1]
    assert entries[3]["job_id"] == 7
    assert "RuntimeError" in entries[3]["exc"]
    text = stream.getvalue()
    for secret in ("discord-SECRET-1234", TOKEN, INTERACTION_TOKEN):
        assert secret not in text
    assert "/webhooks/1234567890/***/messages/@original" in text


def test_text_logs_are_discord_style_and_redacted(root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    setup_logging(level=logging.INFO, fmt="text", secrets=["discord-SECRET-1234"], stream=stream)
    logging.getLogger("bot.app").info("token is %s", "discord-SECRET-1234")
    line = stream.getvalue().strip()  # coloured when discord.py thinks the stream is a terminal
    assert "INFO" in line
    assert "bot.app" in line
    assert line.endswith("token is ***")


def test_redactor_keeps_ordinary_text() -> None:
    redact = Redactor(["s3cr3t-value"])
    assert redact("job 12 queued as 0d3e-77 in #general") == "job 12 queued as 0d3e-77 in #general"
    assert redact("Authorization: Bearer abcdefghijklmnopqrstuvwxyz") == "Authorization: Bearer ***"
    assert redact("a s3cr3t-value b") == "a *** b"
    event = {"t": "INTERACTION_CREATE", "d": {"id": "1", "token": INTERACTION_TOKEN, "type": 2}}
    assert redact(f"WebSocket Event: {event}") == f"WebSocket Event: {event}".replace(INTERACTION_TOKEN, "***")
    assert redact(json.dumps(event)) == json.dumps(event).replace(INTERACTION_TOKEN, "***")


def test_json_formatter_without_extras_is_still_one_object() -> None:
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "plain %s", ("line",), None)
    assert json.loads(JsonFormatter().format(record))["message"] == "plain line"


# -- the entry point as a subprocess -----------------------------------------------


def clean_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNCOMFY_", "DISCORD_", "SHARD_", "HEALTH_"))}
    env.update(values)
    return env


async def run_main(tmp_path: Path, *args: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_check_runs_from_the_environment_and_exits_zero(
    tmp_path: Path, fake_discord: FakeDiscord, guild: FakeGuild, emulator: Emulator
) -> None:
    env = clean_env(
        DISCORD_TOKEN=fake_discord.bot_token,
        RUNCOMFY_API_TOKEN=TOKEN,
        RUNCOMFY_BASE_URL=emulator.url,
        DISCORD_API_BASE_URL=fake_discord.rest_base,
        DISCORD_GATEWAY_URL=fake_discord.gateway_url,
        DISCORD_GUILD_IDS=str(guild.id),
        DATABASE_PATH=str(tmp_path / "data" / "imagine.sqlite3"),
    )
    code, out, err = await run_main(tmp_path, "check", env=env)
    assert code == 0, out + err
    assert "✓ Invite URL" in out
    assert not err.strip()  # INFO lines would bury the report
    for secret in (fake_discord.bot_token, TOKEN):
        assert secret not in out + err

    env["DISCORD_TOKEN"] = "MTIz.not-the-token-abcdefghijkl"
    code, out, err = await run_main(tmp_path, "check", env=env)
    assert code == 1
    assert "✗ Discord token" in out
    assert "not-the-token" not in out + err


async def test_run_with_a_rejected_token_is_one_line_and_status_2(
    tmp_path: Path, fake_discord: FakeDiscord, emulator: Emulator
) -> None:
    env = clean_env(
        DISCORD_TOKEN="MTIz.not-the-token-abcdefghijkl",
        RUNCOMFY_API_TOKEN=TOKEN,
        RUNCOMFY_BASE_URL=emulator.url,
        DISCORD_API_BASE_URL=fake_discord.rest_base,
        DISCORD_GATEWAY_URL=fake_discord.gateway_url,
        DATABASE_PATH=str(tmp_path / "imagine.sqlite3"),
    )
    code, _out, err = await run_main(tmp_path, "run", env=env)
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: Discord rejected DISCORD_TOKEN: ")
    assert "shut down cleanly" not in err  # the failure is the last word, not a reassurance before it
    assert "Traceback" not in err
    assert "not-the-token" not in err


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SHARD_IDS": "1"}, "error: settings: SHARD_IDS needs SHARD_COUNT"),
        ({"HEALTH_PORT": "eighty"}, "error: HEALTH_PORT: "),
        ({}, "error: HEALTH_PORT is not set: set HEALTH_PORT=8080 in .env (the bot serves /healthz there) and restart"),
    ],
)
async def test_bad_settings_are_one_line_and_status_2(tmp_path: Path, env: dict[str, str], expected: str) -> None:
    code, _out, err = await run_main(tmp_path, "health", env=clean_env(**env))
    assert code == 2
    assert err.startswith(expected)
    assert len(err.strip().splitlines()) == 1


async def test_health_exits_1_when_no_bot_answers(tmp_path: Path, unused_tcp_port: int) -> None:
    code, out, _err = await run_main(tmp_path, "health", env=clean_env(HEALTH_PORT=str(unused_tcp_port)))
    assert code == 1
    assert out.startswith("unhealthy: no answer from http://127.0.0.1:")


# -- sharding -------------------------------------------------------------------------


def test_shard_of_is_discords_formula() -> None:
    guild_id = 81384788765712384  # Discord API server
    assert shard_of(guild_id, 1) == 0
    assert shard_of(guild_id, 10) == (guild_id >> 22) % 10
    assert shard_of(None, 10) == 0


def test_build_bot_shards_only_when_asked(tmp_path: Path) -> None:
    plain = build_bot(Settings(_env_file=None))
    assert type(plain) is ImagineBot
    sharded = build_bot(Settings(_env_file=None, shard_count=4, shard_ids=[1, 2]))
    assert isinstance(sharded, ShardedImagineBot)
    assert (sharded.shard_count, sharded.shard_ids) == (4, [1, 2])


def guild_on_shard(shard: int, count: int) -> int:
    """A guild id that Discord routes to `shard` of `count`."""
    guild_id = 1 << 40
    while shard_of(guild_id, count) != shard:
        guild_id += 1 << 22
    return guild_id


async def test_a_sharded_process_resumes_only_the_jobs_of_its_shards(
    tmp_path: Path, fake_discord: FakeDiscord, guild: FakeGuild, emulator: Emulator
) -> None:
    mine = shard_of(guild.id, 2)
    other_guild = guild_on_shard(1 - mine, 2)
    path = tmp_path / "imagine.sqlite3"
    now = datetime.now(UTC)
    async with await SQLiteJobStore.open(path) as store:
        jobs = {}
        for name, guild_id in (("mine", guild.id), ("other", other_guild)):
            origin = JobOrigin(guild_id=guild_id, channel_id=guild_id + 1, user_id=5)
            new = NewJob(model=emulator.config.model_id, prompt=name, aspect_ratio="1:1", seed=1, origin=origin)
            jobs[name] = await store.create(new, now=now)
    settings = Settings(
        _env_file=None,
        discord_token=fake_discord.bot_token,
        runcomfy_api_token=TOKEN,
        runcomfy_base_url=emulator.url,
        database_path=path,
        discord_api_base_url=fake_discord.rest_base,
        discord_gateway_url=fake_discord.gateway_url,
        shard_count=2,
        shard_ids=[mine],
    )
    bot = build_bot(settings, guild_ready_timeout=0.05)
    async with run_bot(fake_discord, bot):
        assert bot.gateway_connected()
        assert bot.get_guild(guild.id) is not None
        assert bot.store is not None
        resumed = await bot.store.get(jobs["mine"].id)
        left = await bot.store.get(jobs["other"].id)
    assert resumed is not None
    assert resumed.state is JobState.FAILED
    assert resumed.error == RESTARTED_WHILE_SUBMITTING
    assert left is not None
    assert left.state is JobState.SUBMITTING


async def test_the_shutdown_watchdog_exits_with_status_1(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import time; from bot.shutdown import force_exit; force_exit(9.5); time.sleep(30)",
        cwd=ROOT,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 1
    assert "shutdown not finished after 9.5 s" in err.decode()


async def test_shutdown_waits_for_reaction_handlers_by_the_name_discord_py_gives_them() -> None:
    """discord.py runs a listener as a task named `discord.py: on_<event>` (Client._schedule_event)."""
    source = inspect.getsource(discord.Client._schedule_event)
    assert "name=f'discord.py: {event_name}'" in source
    assert "method = 'on_' + event" in inspect.getsource(discord.Client.dispatch)
    gate = asyncio.Event()
    task = asyncio.create_task(gate.wait(), name="discord.py: on_raw_reaction_add")
    assert handler_tasks() == [task]
    gate.set()
    await task
