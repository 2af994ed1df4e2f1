"""Ordinary trouble, end to end: Discord down for minutes, the bot down for longer, one channel stuck on 429s.

The bot runs on the fake Discord's clock (`FakeDiscordClock`), so ten minutes
of outage or twenty minutes of downtime pass in a moment while every rule that
depends on time (15-minute tokens, job deadlines, delivery retries) follows.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
from datetime import timedelta
from functools import partial

import pytest

from bot.emulator import Duration, Emulator
from storage.models import Job, JobState
from tests.clocks import FakeDiscordClock
from tests.e2e.conftest import BotStarter, jobs_for
from tests.fakediscord import FakeChannel, FakeDiscord, FakeInteraction, FakeMember
from tests.fakediscord.ratelimit import RouteInfo

DONE = "✅ Done"


def done_versions(interaction: FakeInteraction) -> int:
    message = interaction.original_message
    return 0 if message is None else sum(1 for version in message.versions if DONE in version.content)


def done_once(interaction: FakeInteraction) -> bool:
    return done_versions(interaction) == 1


@pytest.mark.parametrize("drop", [False, True], ids=["answering-503", "refusing-connections"])
async def test_images_finished_during_ten_minutes_of_discord_outage_arrive_once_it_is_back(
    fake_discord: FakeDiscord,
    start_bot: BotStarter,
    emulator: Emulator,
    alice: FakeMember,
    bob: FakeMember,
    general: FakeChannel,
    drop: bool,
) -> None:
    emulator.config.queue_time = Duration.constant(0.1)
    emulator.config.run_time = Duration.constant(0.5)
    async with start_bot(clock=FakeDiscordClock(fake_discord.clock)) as bot:
        interactions = [
            await member.run_command("imagine", general, prompt=f"outage {index}")
            for index, member in enumerate((alice, bob, alice))
        ]
        for interaction in interactions:
            await interaction.wait_until_acked()
        await jobs_for(bot, interactions, JobState.IN_QUEUE, JobState.IN_PROGRESS)
        with fake_discord.rest_outage(drop=drop) as outage:
            await jobs_for(bot, interactions, JobState.DELIVERING, check=lambda job: job.delivery_error)
            for _ in range(20):  # ten minutes of the fake's clock, the bot trying now and then
                fake_discord.clock.advance(30)
                await asyncio.sleep(0.05)
            # retried during the outage, each attempt refused
            await jobs_for(bot, interactions, JobState.DELIVERING, check=lambda job: job.delivery_attempts >= 2)
            assert outage.served > 0
            assert all(done_versions(interaction) == 0 for interaction in interactions)
        for _ in range(12):  # back: the next retry of each is at most five minutes away
            if all(done_versions(interaction) for interaction in interactions):
                break
            fake_discord.clock.advance(30)
            await asyncio.sleep(0.1)
        delivered = await jobs_for(bot, interactions, JobState.DELIVERED)
    assert [done_versions(interaction) for interaction in interactions] == [1, 1, 1]
    replies = [interaction.original_message for interaction in interactions]
    assert all(reply is not None and len(reply.attachments) == 1 for reply in replies)
    assert {job.delivery for job in delivered} <= {"interaction", "channel_edit"}  # the reply itself, edited
    assert len(general.messages) == 3  # no second message for any of them
    assert len(emulator.submits) == 3


async def test_jobs_finished_while_the_bot_was_down_twenty_minutes_are_all_delivered(
    fake_discord: FakeDiscord,
    start_bot: BotStarter,
    emulator: Emulator,
    alice: FakeMember,
    bob: FakeMember,
    general: FakeChannel,
) -> None:
    emulator.config.queue_time = Duration.constant(0.1)
    emulator.config.run_time = Duration.constant(0.6)
    clock = FakeDiscordClock(fake_discord.clock)
    async with start_bot(clock=clock) as bot:
        interactions = [
            await member.run_command("imagine", general, prompt=f"while away {index}")
            for index, member in enumerate((alice, bob, alice))
        ]
        for interaction in interactions:
            await interaction.wait_until_acked()
        await jobs_for(bot, interactions, JobState.IN_QUEUE, JobState.IN_PROGRESS)
    await asyncio.sleep(1.0)  # RunComfy finishes them meanwhile
    fake_discord.clock.advance(20 * 60)  # past the 15-minute job timeout and the interaction tokens
    async with start_bot(clock=clock) as bot:
        delivered = await jobs_for(bot, interactions, JobState.DELIVERED, JobState.FAILED)
        for interaction in interactions:
            await fake_discord.wait_for(partial(done_once, interaction), 10)
    assert [job.state for job in delivered] == [JobState.DELIVERED] * 3  # none failed for its age
    assert len(emulator.submits) == 3


async def test_a_channel_stuck_on_429_does_not_hold_up_other_servers(
    fake_discord: FakeDiscord,
    start_bot: BotStarter,
    emulator: Emulator,
    alice: FakeMember,
    general: FakeChannel,
) -> None:
    emulator.config.queue_time = Duration.constant(0.1)
    emulator.config.run_time = Duration.uniform(0.4, 0.8)
    other = fake_discord.add_guild("Other Server")
    elsewhere = other.add_channel("art")
    artists = [other.add_member(f"artist{index}") for index in range(4)]
    stuck_tokens: set[str] = set()

    def stuck(info: RouteInfo) -> bool:
        return info.params.get("channel_id") == str(general.id) or info.params.get("webhook_token") in stuck_tokens

    async with start_bot(discord_guild_ids=[fake_discord.guild("Test Server").id, other.id]) as bot:
        fake_discord.inject_fault(stuck, 429, times=None, retry_after=1.0)
        blocked = [await alice.run_command("imagine", general, prompt=f"stuck {index}") for index in range(3)]
        stuck_tokens.update(interaction.token for interaction in blocked)
        for interaction in blocked:
            await interaction.wait_until_acked()
        free = [
            await artist.run_command("imagine", elsewhere, prompt=f"free {index}")
            for index, artist in enumerate(artists)
        ]
        for interaction in free:
            await fake_discord.wait_for(partial(done_once, interaction), 30)
        assert all(done_versions(interaction) == 0 for interaction in blocked)  # still stuck meanwhile
        rows = await jobs_for(bot, free, JobState.DELIVERED)
    delays = [_poll_delay(emulator, job) for job in rows]
    sys.stdout.write(  # a figure for the log, not a judgement: tests never assert timings
        f"\npoll delay of the other server's jobs while one channel is stuck on 429: "
        f"median {statistics.median(delays):.2f} s, max {max(delays):.2f} s (of {len(delays)})\n"
    )


def _poll_delay(emulator: Emulator, job: Job) -> float:
    """From RunComfy finishing the job to the bot writing `completed` (both on this machine's wall clock)."""
    assert job.request_id is not None
    assert job.completed_at is not None
    upstream = emulator.jobs[job.request_id]
    finished = upstream.created_wall + timedelta(seconds=upstream.finished - upstream.created)
    return max(0.0, (job.completed_at - finished).total_seconds())
