"""Stopping gracefully: the real `python -m bot` process under SIGTERM, and the shutdown steps in-process.

The subprocess is configured only through environment settings, as a container
is: it answers /imagine end to end, exits 0 within 10 s of SIGTERM, and the job
it left pending is delivered by the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.app import ImagineBot
from bot.emulator import Duration, Emulator, Fault
from bot.settings import Settings
from bot.shutdown import RESTARTING
from storage.models import JobState
from storage.sqlite import SQLiteJobStore
from tests.e2e.conftest import RUNCOMFY_TOKEN, BotStarter, job_in_state, reply_showing
from tests.fakediscord import FakeChannel, FakeDiscord, FakeMember

SHUTDOWN_LIMIT = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class BotProcess:
    """`python -m bot` in a subprocess, with its stderr collected as it is written."""

    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.port = port
        self.lines: list[str] = []
        assert process.stderr is not None
        self._reader = asyncio.create_task(self._read(process.stderr))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    async def healthy(self, within: float = 30.0) -> None:
        """Wait until the bot's own health endpoint says it is connected and working."""
        async with asyncio.timeout(within), aiohttp.ClientSession() as session:
            while True:
                if self.process.returncode is not None:
                    raise AssertionError("the bot exited early:\n" + "\n".join(self.lines))
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"http://127.0.0.1:{self.port}/healthz") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.1)

    async def stop(self) -> tuple[int, float]:
        """SIGTERM; the exit status and how long the exit took."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.process.wait(), SHUTDOWN_LIMIT + 5)
        await self._reader
        return code, loop.time() - started

    def logs(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines if line.startswith("{")]


@pytest.fixture
def process_env(settings: Settings) -> dict[str, str]:
    """The e2e settings as a container gets them: environment variables only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNCOMFY_", "DISCORD_", "SHARD_", "HEALTH_"))}
    assert settings.discord_token is not None
    env.update(
        DISCORD_TOKEN=settings.discord_token.get_secret_value(),
        RUNCOMFY_API_TOKEN=RUNCOMFY_TOKEN,
        RUNCOMFY_BASE_URL=settings.runcomfy_base_url,
        DATABASE_PATH=str(settings.database_path),
        DISCORD_GUILD_IDS=",".join(map(str, settings.discord_guild_ids)),
        DISCORD_API_BASE_URL=settings.discord_api_base_url,
        DISCORD_GATEWAY_URL=settings.discord_gateway_url,
        POLL_MIN_INTERVAL_SECONDS="0.05",
        POLL_MAX_INTERVAL_SECONDS="0.25",
        LOG_FORMAT="json",
        LOG_LEVEL="DEBUG",  # the most a library ever logs: URLs with tokens, gateway payloads, SQL parameters
    )
    return env


@contextlib.asynccontextmanager
async def bot_process(env: dict[str, str], cwd: Path) -> AsyncIterator[BotProcess]:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        cwd=cwd,
        env={**env, "HEALTH_PORT": str(port)},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    running = BotProcess(process, port)
    try:
        yield running
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        running._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running._reader


async def test_sigterm_exits_zero_within_10_s_and_the_next_start_resumes(
    tmp_path: Path,
    process_env: dict[str, str],
    settings: Settings,
    fake_discord: FakeDiscord,
    emulator: Emulator,
    alice: FakeMember,
    general: FakeChannel,
) -> None:
    async with bot_process(process_env, tmp_path) as bot:
        await bot.healthy()
        first = await alice.run_command("imagine", general, prompt="a red fox, watercolor", seed=7)
        done = await reply_showing(fake_discord, first, "Done")
        assert done.attachments

        emulator.config.queue_time = Duration.constant(2.0)
        second = await alice.run_command("imagine", general, prompt="a lighthouse at dusk", seed=8)
        await reply_showing(fake_discord, second, "Queued")
        code, took = await bot.stop()
        assert code == 0, "\n".join(bot.lines)
        assert took < SHUTDOWN_LIMIT
        logs = bot.logs()

    transitions = [entry for entry in logs if entry.get("job_id") == 1 and entry["message"].startswith("job 1 -> ")]
    assert [entry["state"] for entry in transitions] == [
        "submitting",
        "in_queue",
        "in_progress",
        "completed",
        "delivering",
        "delivered",
    ]
    assert any("shutting down" in entry["message"] for entry in logs)
    assert [entry for entry in logs if entry["logger"] == "bot.app"][-1]["message"] == "shut down cleanly"
    text = "\n".join(bot.lines)
    for secret in (fake_discord.bot_token, RUNCOMFY_TOKEN, first.token, second.token):
        assert secret not in text
    assert "Traceback" not in text

    async with await SQLiteJobStore.open(settings.database_path) as store:
        pending = await store.get(2)
        assert pending is not None
        assert pending.state is JobState.IN_QUEUE  # left for the next start, not failed

    async with bot_process(process_env, tmp_path) as bot:
        await reply_showing(fake_discord, second, "Done", within=20)
        code, took = await bot.stop()
        assert code == 0
        assert took < SHUTDOWN_LIMIT
    assert emulator.submits_for("a lighthouse at dusk", 8, "1:1") == 1


async def test_while_stopping_commands_get_a_friendly_answer_and_reactions_start_nothing(
    fake_discord: FakeDiscord, bot: ImagineBot, alice: FakeMember, general: FakeChannel, emulator: Emulator
) -> None:
    first = await alice.run_command("imagine", general, prompt="a red fox, watercolor", seed=7)
    original = await reply_showing(fake_discord, first, "Done")
    assert bot.store is not None
    await job_in_state(bot, 1, JobState.DELIVERED)

    bot.stopping = True  # what request_shutdown sets first; the close itself is the fixture's
    refused = await alice.run_command("imagine", general, prompt="another fox")
    answer = await refused.wait_for_message()
    assert answer.content == RESTARTING
    assert answer.ephemeral
    await alice.react(original, "🔄")
    await asyncio.sleep(0.3)
    assert await bot.store.get(2) is None
    assert len(emulator.submits) == 1


async def test_shutdown_lets_a_command_in_flight_finish_its_submit(
    start_bot: BotStarter, fake_discord: FakeDiscord, alice: FakeMember, general: FakeChannel, emulator: Emulator
) -> None:
    emulator.config.queue_time = Duration.constant(30.0)
    emulator.inject("submit", Fault.slow(1.0))
    async with start_bot() as bot:
        assert bot.store is not None
        interaction = await alice.run_command("imagine", general, prompt="slow to submit")
        await job_in_state(bot, 1, JobState.SUBMITTING)
        bot.request_shutdown("SIGTERM")
        await asyncio.wait_for(bot.closed(), SHUTDOWN_LIMIT)
        assert bot.is_closed()
    await interaction.wait_until_acked()
    async with await SQLiteJobStore.open(bot.settings.database_path) as store:
        job = await store.get(1)
    assert job is not None
    assert job.state is JobState.IN_QUEUE  # the submit finished and was written before the bot closed
    assert len(emulator.submits) == 1
