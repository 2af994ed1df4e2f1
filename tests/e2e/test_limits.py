"""Limits end to end: each one hit (ephemeral answer with the numbers, nothing spent) and released.

Jobs that must stay "in progress" sit in the emulator's queue; the server's
own line is watched through the replies members see.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.app import ImagineBot
from bot.emulator import Duration, Emulator
from bot.settings import Settings
from storage.models import JobOrigin, JobState, NewJob
from storage.sqlite import SQLiteJobStore
from tests.e2e.conftest import BotStarter, job_in_state, reply_showing
from tests.e2e.test_community_support import admin, backdate, finished_image, job_for
from tests.fakediscord import FakeChannel, FakeDiscord, FakeGuild, FakeMember


async def test_a_members_extra_job_waits_its_turn_and_only_past_the_line_cap_is_refused(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    alice: FakeMember,
    moderator: FakeMember,
    general: FakeChannel,
) -> None:
    emulator.config.queue_time = Duration.constant(30.0)
    await admin(moderator, general, "set member-jobs", limit=2)
    await admin(moderator, general, "set member-queue", limit=1)
    first = await alice.run_command("imagine", general, prompt="first of two")
    second = await alice.run_command("imagine", general, prompt="second of two")
    await reply_showing(fake_discord, first, "Queued")
    await reply_showing(fake_discord, second, "Queued")

    third = await alice.run_command("imagine", general, prompt="waits for mine")
    await reply_showing(fake_discord, third, "Waiting for one of your images to finish · #1 in line")
    assert emulator.submits_for("waits for mine") == 0  # nothing sent or billed while it waits

    fourth = await alice.run_command("imagine", general, prompt="one too many")
    refusal = await fourth.wait_for_message()
    assert refusal.ephemeral
    assert "1 image waiting in this server's line" in refusal.content
    assert "holds up to 1 of yours" in refusal.content
    assert emulator.submits_for("one too many") == 0

    job = await job_for(bot, first)
    assert first.original_message is not None
    click = await alice.click(first.original_message, f"imagine:cancel:{job.id}")
    await fake_discord.wait_for(lambda: click.followups and "nothing was charged" in click.followups[-1].content, 10)
    await reply_showing(fake_discord, third, "Queued")  # its turn came
    assert emulator.submits_for("waits for mine") == 1


async def test_daily_quota_is_hit_then_released_when_the_window_moves_on(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    settings: Settings,
    alice: FakeMember,
    moderator: FakeMember,
    general: FakeChannel,
) -> None:
    await admin(moderator, general, "set daily-quota", limit=2)
    await finished_image(fake_discord, bot, alice, general, "quota one")
    await finished_image(fake_discord, bot, alice, general, "quota two")

    over = await alice.run_command("imagine", general, prompt="quota three")
    refusal = await over.wait_for_message()
    assert refusal.ephemeral
    assert "2 of your 2 images for the last 24 hours" in refusal.content
    assert "<t:" in refusal.content  # when the next one frees up
    assert emulator.submits_for("quota three") == 0

    backdate(settings.database_path, alice.id, hours=24.5)  # a day later
    again = await alice.run_command("imagine", general, prompt="quota four")
    await reply_showing(fake_discord, again, "Done")


async def test_members_with_manage_server_bypass_member_limits_unless_switched_off(
    fake_discord: FakeDiscord, bot: ImagineBot, emulator: Emulator, moderator: FakeMember, general: FakeChannel
) -> None:
    emulator.config.queue_time = Duration.constant(30.0)
    await admin(moderator, general, "set member-jobs", limit=1)
    for index in range(2):
        interaction = await moderator.run_command("imagine", general, prompt=f"admin job {index}")
        await reply_showing(fake_discord, interaction, "Queued")

    off = await admin(moderator, general, "set admin-bypass", enabled=False)
    assert "off" in off.content
    held = await moderator.run_command("imagine", general, prompt="no bypass now")
    await reply_showing(fake_discord, held, "Waiting for one of your images to finish")
    assert emulator.submits_for("no bypass now") == 0


async def test_server_slots_make_jobs_wait_in_line_with_their_place_shown(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    alice: FakeMember,
    bob: FakeMember,
    moderator: FakeMember,
    general: FakeChannel,
) -> None:
    emulator.config.queue_time = Duration.constant(0.6)
    await admin(moderator, general, "set server-jobs", limit=1)
    running = await alice.run_command("imagine", general, prompt="holds the slot")
    await reply_showing(fake_discord, running, "Queued")
    second = await bob.run_command("imagine", general, prompt="waits first")
    third = await moderator.run_command("imagine", general, prompt="waits second")  # nobody skips the line
    await reply_showing(fake_discord, second, "Waiting for a free slot · #1")
    await reply_showing(fake_discord, third, "Waiting for a free slot · #2")
    assert emulator.submits_for("waits first") == 0  # nothing spent while waiting

    await reply_showing(fake_discord, running, "Done")
    await reply_showing(fake_discord, second, "Done", within=15)
    message = await reply_showing(fake_discord, third, "Done", within=15)
    seen = [version.content for version in message.versions]
    assert any("#2" in text for text in seen)
    assert any("Waiting for a free slot · #1" in text for text in seen)
    prompts = [record.body["prompt"] for record in emulator.submits]
    assert prompts == ["holds the slot", "waits first", "waits second"]


async def test_waiting_jobs_survive_a_restart_and_start_in_order(
    fake_discord: FakeDiscord,
    start_bot: BotStarter,
    emulator: Emulator,
    alice: FakeMember,
    bob: FakeMember,
    moderator: FakeMember,
    general: FakeChannel,
) -> None:
    emulator.config.queue_time = Duration.constant(1.5)
    async with start_bot():
        await admin(moderator, general, "set server-jobs", limit=1)
        running = await alice.run_command("imagine", general, prompt="before the restart")
        await reply_showing(fake_discord, running, "Queued")
        first = await bob.run_command("imagine", general, prompt="line one")
        second = await moderator.run_command("imagine", general, prompt="line two")
        await reply_showing(fake_discord, second, "Waiting for a free slot · #2")
    emulator.config.queue_time = Duration.constant(0.2)
    async with start_bot() as again:
        await reply_showing(fake_discord, first, "Done", within=15)
        await reply_showing(fake_discord, second, "Done", within=15)
        job = await job_for(again, second)
        await job_in_state(again, job.id, JobState.DELIVERED)
    prompts = [record.body["prompt"] for record in emulator.submits]
    assert prompts == ["before the restart", "line one", "line two"]


async def test_cancelling_a_waiting_job_moves_the_line_up(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    alice: FakeMember,
    bob: FakeMember,
    moderator: FakeMember,
    general: FakeChannel,
) -> None:
    emulator.config.queue_time = Duration.constant(30.0)
    await admin(moderator, general, "set server-jobs", limit=1)
    await reply_showing(fake_discord, await alice.run_command("imagine", general, prompt="slot"), "Queued")
    ahead = await bob.run_command("imagine", general, prompt="ahead")
    behind = await moderator.run_command("imagine", general, prompt="behind")
    await reply_showing(fake_discord, behind, "#2")
    job = await job_for(bot, ahead)
    assert ahead.original_message is not None
    click = await bob.click(ahead.original_message, f"imagine:cancel:{job.id}")
    await fake_discord.wait_for(lambda: click.followups and "nothing was charged" in click.followups[-1].content, 10)
    await reply_showing(fake_discord, ahead, "Cancelled")
    await reply_showing(fake_discord, behind, "Waiting for a free slot · #1")
    await asyncio.sleep(0.1)
    assert emulator.submits_for("ahead") == 0


async def test_after_a_restart_a_waiting_job_keeps_its_place_only_if_its_reply_was_acknowledged(
    fake_discord: FakeDiscord,
    start_bot: BotStarter,
    emulator: Emulator,
    settings: Settings,
    alice: FakeMember,
    bob: FakeMember,
    moderator: FakeMember,
    general: FakeChannel,
    guild: FakeGuild,
) -> None:
    emulator.config.queue_time = Duration.constant(1.5)
    async with start_bot() as first:
        await admin(moderator, general, "set server-jobs", limit=1)
        await reply_showing(fake_discord, await alice.run_command("imagine", general, prompt="holder"), "Queued")
        acknowledged = await bob.run_command("imagine", general, prompt="acknowledged")
        await reply_showing(fake_discord, acknowledged, "Waiting for a free slot · #1")
        waiting = await job_for(first, acknowledged)
    # As if the process had died right after the acknowledgement, before writing the reply's id down...
    backdate_reply(settings.database_path, waiting.id)
    # ...and, for another command, between writing its row and acknowledging it (the member saw it fail).
    unanswered = await bob.run_command("imagine", general, prompt="never acknowledged")
    async with await SQLiteJobStore.open(settings.database_path) as store:
        origin = JobOrigin(
            guild_id=guild.id,
            channel_id=general.id,
            user_id=bob.id,
            application_id=fake_discord.application_id,
            interaction_token=unanswered.token,
            token_expires_at=datetime.now(UTC) + timedelta(minutes=15),
        )
        orphan = await store.create(
            NewJob("m", "never acknowledged", "1:1", 1, origin), now=datetime.now(UTC), state=JobState.WAITING
        )
    async with start_bot() as again:
        dropped = await job_in_state(again, orphan.id, JobState.FAILED)
        assert dropped.error is not None
        assert "never acknowledged" in dropped.error
        await reply_showing(fake_discord, acknowledged, "Done", within=15)
    assert emulator.submits_for("acknowledged") == 1
    assert emulator.submits_for("never acknowledged") == 0
    assert not [m for m in general.messages if "never acknowledged" in m.content + str(m.embeds)]


def backdate_reply(database: Path, job_id: int) -> None:
    with contextlib.closing(sqlite3.connect(database)) as db, db:
        db.execute("UPDATE jobs SET message_id = NULL WHERE id = ?", (job_id,))
