"""A SIGKILL at each exact point between two writes, replayed on purpose.

The chaos run (test_chaos.py) reaches these windows by chance, a few
milliseconds wide each. Here the database and Discord are put in the state a
kill at that point leaves behind, and a fresh bot starts on them.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from bot.emulator import Duration, Emulator
from bot.jobs import NOTIFIED
from bot.settings import Settings
from cogs.courier import ALREADY_SHOWN
from storage.models import Job, JobOrigin, JobState, NewJob
from storage.sqlite import SQLiteJobStore
from tests.chaos.harness import DONE, FAILED, NOT_RESENT
from tests.e2e.conftest import BotStarter, job_in_state, reply_showing
from tests.fakediscord import FakeChannel, FakeDiscord, FakeGuild, FakeInteraction, FakeMember, FakeMessage
from tests.fakediscord.interactions import ACK_DEADLINE

pytestmark = pytest.mark.chaos


async def acknowledge(fake: FakeDiscord, interaction: FakeInteraction) -> None:
    """The last thing the killed process did: the deferred acknowledgement, as discord.py sends it."""
    url = f"{fake.rest_base}/interactions/{interaction.id}/{interaction.token}/callback"
    async with aiohttp.ClientSession() as session, session.post(url, json={"type": 5}) as response:
        assert response.status == 204


async def write_submitting_row(
    settings: Settings, fake: FakeDiscord, guild: FakeGuild, channel: FakeChannel, member: FakeMember, prompt: str
) -> Job:
    """The row /imagine writes before it acknowledges: `submitting`, the interaction token, no message id yet."""
    origin = JobOrigin(
        guild_id=guild.id,
        channel_id=channel.id,
        user_id=member.id,
        application_id=fake.application_id,
        interaction_token=(await _interaction_for(fake, prompt)).token,
        token_expires_at=datetime.now(UTC) + timedelta(minutes=15),
        filesize_limit=10 * 1024 * 1024,
    )
    store = await SQLiteJobStore.open(settings.database_path)
    async with store:
        return await store.create(
            NewJob(model=settings.runcomfy_model, prompt=prompt, aspect_ratio="1:1", seed=5, origin=origin),
            now=datetime.now(UTC),
        )


async def _interaction_for(fake: FakeDiscord, prompt: str) -> FakeInteraction:
    for interaction in fake.interactions.by_id.values():
        if any(option.get("value") == prompt for option in interaction.data.get("options", [])):
            return interaction
    raise AssertionError(f"no interaction sent {prompt!r}")


async def notified(settings: Settings, job_id: int) -> Job:
    """The job once its end is recorded as shown (written just after the edit)."""
    store = await SQLiteJobStore.open(settings.database_path, read_only=True)
    async with store, asyncio.timeout(10):
        while True:
            job = await store.get(job_id)
            if job is not None and job.delivery == NOTIFIED:
                return job
            await asyncio.sleep(0.02)


def versions_showing(message: FakeMessage, marker: str) -> int:
    return sum(1 for version in message.versions if marker in version.content)


async def test_killed_between_acknowledging_and_writing_the_message_id(
    fake_discord: FakeDiscord,
    start_bot: BotStarter,
    settings: Settings,
    emulator: Emulator,
    guild: FakeGuild,
    general: FakeChannel,
    alice: FakeMember,
) -> None:
    async with start_bot():
        pass  # the killed process had registered /imagine
    prompt = "a kill between the acknowledgement and the next write"
    interaction = await alice.run_command("imagine", general, prompt=prompt)
    job = await write_submitting_row(settings, fake_discord, guild, general, alice, prompt)
    await acknowledge(fake_discord, interaction)
    async with start_bot():
        reply = await reply_showing(fake_discord, interaction, FAILED)
        job = await notified(settings, job.id)
    assert NOT_RESENT in str(reply.embeds)
    assert not reply.loading
    assert versions_showing(reply, FAILED) == 1
    assert job.state is JobState.FAILED
    assert job.origin.interaction_token is None
    assert emulator.submits == []


async def test_killed_before_the_acknowledgement_spends_nothing_and_says_so(
    fake_discord: FakeDiscord,
    start_bot: BotStarter,
    settings: Settings,
    emulator: Emulator,
    guild: FakeGuild,
    general: FakeChannel,
    alice: FakeMember,
) -> None:
    async with start_bot():
        pass
    prompt = "a kill before the acknowledgement"
    interaction = await alice.run_command("imagine", general, prompt=prompt)
    job = await write_submitting_row(settings, fake_discord, guild, general, alice, prompt)
    fake_discord.clock.advance(ACK_DEADLINE + 1)  # Discord tells the member "The application did not respond"
    assert interaction.failed
    async with start_bot():
        job = await notified(settings, job.id)

        def explanation() -> FakeMessage | None:
            return next((m for m in general.messages if NOT_RESENT in str(m.embeds)), None)

        explained = await fake_discord.wait_for(explanation, 10)
        assert explained is not None
    assert emulator.submits == []
    assert "your image is ready" not in explained.content
    assert explained.pings.users == frozenset({alice.id})
    assert not explained.attachments


async def test_killed_after_the_image_reached_discord_before_delivered_was_written(
    fake_discord: FakeDiscord,
    start_bot: BotStarter,
    settings: Settings,
    emulator: Emulator,
    general: FakeChannel,
    alice: FakeMember,
) -> None:
    async with start_bot() as first:
        interaction = await alice.run_command("imagine", general, prompt="an image shown exactly once")
        reply = await reply_showing(fake_discord, interaction, DONE)
        assert first.store is not None
        [job] = await first.store.jobs_for_user(alice.id)
        await job_in_state(first, job.id, JobState.DELIVERED)
        # What a kill just after Discord's answer leaves: the reply has the image, the row still says completed.
        await first.store.transition(
            job.id, JobState.COMPLETED, now=datetime.now(UTC), delivery=None, interaction_token=interaction.token
        )
    async with start_bot() as second:
        job = await job_in_state(second, job.id, JobState.DELIVERED)
    assert job.delivery == ALREADY_SHOWN
    assert versions_showing(reply, DONE) == 1
    assert [m for m in general.messages if m.attachments] == [reply]
    assert len(emulator.submits) == 1


async def test_killed_after_writing_a_failure_before_showing_it(
    fake_discord: FakeDiscord,
    start_bot: BotStarter,
    settings: Settings,
    emulator: Emulator,
    general: FakeChannel,
    alice: FakeMember,
) -> None:
    emulator.config.queue_time = Duration.constant(30.0)
    reason = "The image service failed to generate this image."
    async with start_bot() as first:
        interaction = await alice.run_command("imagine", general, prompt="a failure nobody saw")
        reply = await reply_showing(fake_discord, interaction, "Queued")
        assert first.store is not None
        [job] = await first.store.jobs_for_user(alice.id)
        await first.store.transition(job.id, JobState.FAILED, now=datetime.now(UTC), error=reason)
    assert FAILED not in reply.content
    async with start_bot():
        await reply_showing(fake_discord, interaction, FAILED)
        await notified(settings, job.id)
    assert reason in str(reply.embeds)
    assert versions_showing(reply, FAILED) == 1
