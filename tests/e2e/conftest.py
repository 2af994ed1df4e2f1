"""End-to-end fixtures: the product bot (unmodified discord.py) against the fake Discord and the emulator.

Everything real a member meets is real here: HTTP to the emulator, REST and
gateway to the fake Discord, a SQLite file on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.app import ImagineBot
from bot.clock import Clock
from bot.emulator import Duration, Emulator, EmulatorConfig
from bot.settings import Settings
from storage.models import Job, JobState
from tests.bot_settings import QUICK_POLLING, bot_settings
from tests.fakediscord import FakeDiscord, FakeGuild, FakeInteraction, FakeMember, FakeMessage
from tests.fakediscord.runner import run_bot

RUNCOMFY_TOKEN = "rc-SECRET-e2e-token-7f3a"

BotStarter = Callable[..., contextlib.AbstractAsyncContextManager[ImagineBot]]


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    """Quick jobs by default (0.2 s queued, 0.3 s generating); tests change `emulator.config`."""
    config = EmulatorConfig(queue_time=Duration.constant(0.2), run_time=Duration.constant(0.3))
    async with Emulator(config, token=RUNCOMFY_TOKEN, seed=3) as emu:
        yield emu


@pytest.fixture
def settings(tmp_path: Path, emulator: Emulator, fake_discord: FakeDiscord, guild: FakeGuild) -> Settings:
    return bot_settings(
        fake_discord,
        emulator,
        token=RUNCOMFY_TOKEN,
        database_path=tmp_path / "imagine.sqlite3",
        guild_ids=[guild.id],
        **QUICK_POLLING,
    )


@pytest.fixture
def start_bot(fake_discord: FakeDiscord, settings: Settings) -> BotStarter:
    """`async with start_bot() as bot:` runs a fresh ImagineBot process-equivalent on the same database."""

    @contextlib.asynccontextmanager
    async def start(clock: Clock | None = None, **overrides: Any) -> AsyncIterator[ImagineBot]:
        bot = ImagineBot(settings.model_copy(update=overrides), clock=clock, guild_ready_timeout=0.05)
        async with run_bot(fake_discord, bot) as running:
            yield running

    return start


@pytest.fixture
async def bot(start_bot: BotStarter) -> AsyncIterator[ImagineBot]:
    async with start_bot() as running:
        yield running


async def reply_showing(
    fake: FakeDiscord, interaction: FakeInteraction, text: str, within: float = 10.0
) -> FakeMessage:
    """The interaction's reply once its content contains `text`."""

    def ready() -> FakeMessage | None:
        message = interaction.original_message
        return message if message is not None and text in message.content else None

    return await fake.wait_for(ready, within)


async def private_answer(fake: FakeDiscord, interaction: FakeInteraction, within: float = 10.0) -> FakeMessage:
    """What only the member sees in answer to `interaction`: its ephemeral reply or, for a refusal found after a
    public "thinking...", the ephemeral followup once that reply is gone. Nothing of it stays in the channel."""
    await interaction.wait_until_acked(within)
    assert not interaction.failed, interaction.failed_reason

    def answered() -> FakeMessage | None:
        original = interaction.original_message
        if interaction.ephemeral:
            return original if original is not None and not original.loading else None
        if original is None or not original.deleted:
            return None
        return next((message for message in interaction.followups if message.ephemeral), None)

    answer = await fake.wait_for(answered, within)
    shown = [interaction.original_message, *interaction.followups]
    assert [m for m in shown if m is not None and not m.deleted and not m.ephemeral] == []
    return answer


async def nothing_started(bot: ImagineBot, member: FakeMember) -> None:
    """None of the member's jobs was sent, charged or shown: any written (an edit is written before its image is
    read, so that the restart can answer its reply) ended at once, unsent, with no notice owed."""
    assert bot.store is not None
    jobs = await bot.store.jobs_for_user(member.id)
    assert [(job.state, job.request_id, job.deliver_at) for job in jobs] == [(JobState.FAILED, None, None)] * len(jobs)
    assert all(job.error is not None and job.error.startswith("not started") for job in jobs), jobs


async def job_in_state(bot: ImagineBot, job_id: int, *states: JobState, within: float = 10.0) -> Job:
    """The job once it reaches one of `states` (the store is written just after Discord answers)."""
    assert bot.store is not None
    async with asyncio.timeout(within):
        while True:
            job = await bot.store.get(job_id)
            if job is not None and job.state in states:
                return job
            await asyncio.sleep(0.02)


async def jobs_for(
    bot: ImagineBot,
    interactions: list[FakeInteraction],
    *states: JobState,
    within: float = 20.0,
    check: Callable[[Job], object] | None = None,
) -> list[Job]:
    """The jobs behind `interactions` (one each, by member and prompt), once every one is in one of `states`
    (and passes `check`, when given)."""
    assert bot.store is not None
    async with asyncio.timeout(within):
        while True:
            rows: list[Job] = []
            for interaction in interactions:
                prompt = interaction.data.get("options", [{}])
                mine = await bot.store.jobs_for_user(interaction.member.id, limit=1000)
                wanted = {str(option.get("value")) for option in prompt if option.get("name") == "prompt"}
                rows.extend(job for job in mine if job.prompt in wanted)
            if len(rows) == len(interactions) and all(
                row.state in states and (check is None or check(row)) for row in rows
            ):
                return rows
            await asyncio.sleep(0.02)
