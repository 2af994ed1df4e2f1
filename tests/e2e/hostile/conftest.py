"""The fixture that plays one hostile-input case against the bot in this process (tests/e2e/hostile/support.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.emulator import Duration, Emulator
from bot.settings import Settings
from tests.e2e.conftest import BotStarter
from tests.e2e.hostile.support import Case, Changes, Play, World
from tests.fakediscord import FakeChannel, FakeDiscord, FakeGuild, FakeMember


@pytest.fixture
def play(
    fake_discord: FakeDiscord,
    start_bot: BotStarter,
    emulator: Emulator,
    settings: Settings,
    guild: FakeGuild,
    general: FakeChannel,
    alice: FakeMember,
    bob: FakeMember,
) -> Play:
    """Start the bot, count from there, play the case; then the changes must be the case's, and nothing failed."""

    async def run(case: Case) -> None:
        emulator.config.queue_time = Duration.constant(0.05)  # quick jobs: the table is long
        emulator.config.run_time = Duration.constant(0.1)
        overrides: dict[str, Any] = {}
        if case.localhost_api:
            port = emulator.url.rsplit(":", 1)[1]
            overrides["runcomfy_base_url"] = f"http://localhost:{port}"
            emulator.config.file_base_url = f"http://localhost:{port}"
            emulator.config.result_kind = "redirect"
            emulator.config.redirect_url = f"http://127.0.0.1:{port}/files/elsewhere.png"
        async with start_bot(**overrides) as bot:
            world = World(fake_discord, bot, emulator, settings, guild, general, alice, bob)
            world.mark()
            await case.act(world)
            await asyncio.sleep(0.2)  # room for anything the bot might still do
            submits, jobs, messages = (
                after - before for after, before in zip(world.counts(), world.before, strict=True)
            )
        assert Changes(submits, jobs, messages) == case.changes
        assert not fake_discord.failed_interactions

    return run
