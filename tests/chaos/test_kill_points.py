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
from bot.settings import Settings
from cogs.courier import ALREADY_SHOWN
from storage.models import Job, JobOrigin, JobState, NewJob
from storage.sqlite import SQLiteJobStore
from tests.chaos.verdict import DONE, FAILED, NOT_RESENT
from tests.e2e.conftest import BotStarter, job_in_state, reply_showing
from tests.e2e.test_community_support import admin
from tests.fakediscord import FakeChannel, FakeDiscord, FakeGuild, FakeInteraction, FakeMember, FakeMessage, Fault
from tests.fakediscord.interactions import ACK_DEADLINE
from tests.fakediscord.server import DROP

pytestmark = pytest.mark.chaos


async def acknowledge(fake: FakeDiscord, interaction: FakeInteraction) -> None:
    """The last thing the killed process did: the deferred acknowledgement, as discord.py sends it."""
    url = f"{fake.rest_base}/interactions/{interaction.id}/{interaction.token}/callback"
    async with aiohttp.ClientSession() as session, session.post(url, json={"type": 5}) as response:
        assert response.status == 204


ANY = tuple(JobState)
TOKEN_READ = "GET /webhooks/{webhook_id}/{webhook_token}/messages/{message_id}"


async def write_waiting_row(
    settings: Settings,
    fake: FakeDiscord,
    guild: FakeGuild,
    channel: FakeChannel,
    member: FakeMember,
    prompt: str,
    *,
    state: JobState = JobState.WAITING,
    message_id: int | None = None,
) -> Job:
    """The row /imagine writes before it acknowledges: `waiting`, the interaction token, no message id yet."""
    origin = JobOrigin(
        guild_id=guild.id,
        channel_id=channel.id,
        user_id=member.id,
        application_id=fake.application_id,
        interaction_token=(await _interaction_for(fake, prompt)).token,
        token_expires_at=datetime.now(UTC) + timedelta(minutes=15),
        filesize_limit=10 * 1024 * 1024,
        message_id=message_id,
    )
    store = await SQLiteJobStore.open(settings.database_path)
    async with store:
        return await store.create(
            NewJob(model=settings.runcomfy_model, prompt=prompt, aspect_ratio="1:1", seed=5, origin=origin),
            now=datetime.now(UTC),
            state=state,
            post_nonce="1234567",
        )


async def _interaction_for(fake: FakeDiscord, prompt: str) -> FakeInteraction:
    for interaction in fake.interactions.by_id.values():
        if any(option.get("value") == prompt for option in interaction.data.get("options", [])):
            return interaction
    raise AssertionError(f"no interaction sent {prompt!r}")


async def settled(settings: Settings, job_id: int) -> Job:
    """The job once nothing more is owed to its member (its image or its end shown, or given up)."""
    store = await SQLiteJobStore.open(settings.database_path, read_only=True)
    async with store, asyncio.timeout(10):
        while True:
            job = await store.get(job_id)
            if job is not None and job.state.is_final and job.deliver_at is None:
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
    """The member saw "thinking…": the restart finds the reply through the stored token and the job goes on."""
    async with start_bot():
        pass  # the killed process had registered /imagine
    prompt = "a kill between the acknowledgement and the next write"
    interaction = await alice.run_command("imagine", general, prompt=prompt)
    job = await write_waiting_row(settings, fake_discord, guild, general, alice, prompt)
    await acknowledge(fake_discord, interaction)
    async with start_bot():
        reply = await reply_showing(fake_discord, interaction, DONE)
        job = await settled(settings, job.id)
    assert not reply.loading
    assert versions_showing(reply, DONE) == 1
    assert job.state is JobState.DELIVERED
    assert job.origin.message_id == reply.id
    assert job.origin.interaction_token is None
    assert emulator.submits_for(prompt) == 1


async def test_killed_before_the_acknowledgement_spends_nothing_and_posts_nothing(
    fake_discord: FakeDiscord,
    start_bot: BotStarter,
    settings: Settings,
    emulator: Emulator,
    guild: FakeGuild,
    general: FakeChannel,
    alice: FakeMember,
) -> None:
    """Discord told the member "The application did not respond": nothing was spent, so nothing more is said."""
    async with start_bot():
        pass
    prompt = "a kill before the acknowledgement"
    interaction = await alice.run_command("imagine", general, prompt=prompt)
    job = await write_waiting_row(settings, fake_discord, guild, general, alice, prompt)
    fake_discord.clock.advance(ACK_DEADLINE + 1)
    assert interaction.failed
    async with start_bot():
        job = await settled(settings, job.id)
        await asyncio.sleep(0.3)
    assert job.state is JobState.FAILED
    assert job.error is not None
    assert "never acknowledged" in job.error
    assert emulator.submits == []
    assert general.messages == []


async def test_killed_between_submitting_and_writing_the_request_id(
    fake_discord: FakeDiscord,
    start_bot: BotStarter,
    settings: Settings,
    emulator: Emulator,
    guild: FakeGuild,
    general: FakeChannel,
    alice: FakeMember,
) -> None:
    """It may exist upstream (billed once); sending it again could bill twice: the reply says so, once."""
    async with start_bot():
        pass
    prompt = "a kill while sending"
    interaction = await alice.run_command("imagine", general, prompt=prompt)
    await acknowledge(fake_discord, interaction)
    assert interaction.original_message is not None  # "thinking…", its id written with the job
    job = await write_waiting_row(
        settings,
        fake_discord,
        guild,
        general,
        alice,
        prompt,
        state=JobState.SUBMITTING,
        message_id=interaction.original_message.id,
    )
    async with start_bot():
        reply = await reply_showing(fake_discord, interaction, FAILED)
        job = await settled(settings, job.id)
    assert NOT_RESENT in str(reply.embeds)
    assert versions_showing(reply, FAILED) == 1
    assert (job.state, job.delivery) == (JobState.FAILED, "interaction")
    assert job.origin.interaction_token is None
    assert emulator.submits == []


@pytest.mark.parametrize("first_look_fails", [False, True], ids=["reply readable", "first read of the reply refused"])
async def test_killed_after_the_image_reached_discord_before_delivered_was_written(
    fake_discord: FakeDiscord,
    start_bot: BotStarter,
    settings: Settings,
    emulator: Emulator,
    general: FakeChannel,
    alice: FakeMember,
    first_look_fails: bool,
) -> None:
    """The restarted bot looks at the reply before editing it again; when it cannot look (Discord down for a
    moment), it waits and looks again rather than edit blindly and show the image twice."""
    async with start_bot() as first:
        interaction = await alice.run_command("imagine", general, prompt="an image shown exactly once")
        reply = await reply_showing(fake_discord, interaction, DONE)
        assert first.store is not None
        [job] = await first.store.jobs_for_user(alice.id)
        await job_in_state(first, job.id, JobState.DELIVERED)
        # What a kill just after Discord's answer leaves: the reply has the image, the row still says delivering.
        await first.store.transition(
            job.id,
            JobState.DELIVERING,
            expect=ANY,
            now=datetime.now(UTC),
            delivery=None,
            deliver_at=datetime.now(UTC),
            interaction_token=interaction.token,
        )
    refused: list[Fault] = []
    if first_look_fails:  # neither route can tell: through the token (cut off), then through the channel (503)
        refused.append(fake_discord.inject_fault(TOKEN_READ, DROP, times=2))  # aiohttp sends a GET again once
        refused.append(fake_discord.inject_fault("GET /channels/{channel_id}/messages/{message_id}", 503))
    async with start_bot() as second:
        job = await job_in_state(second, job.id, JobState.DELIVERED)
    assert [fault.served for fault in refused] == [fault.times for fault in refused]
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
        await first.store.transition(
            job.id, JobState.FAILED, expect=ANY, now=datetime.now(UTC), error=reason, deliver_at=datetime.now(UTC)
        )
    assert FAILED not in reply.content
    async with start_bot():
        await reply_showing(fake_discord, interaction, FAILED)
        await settled(settings, job.id)
    assert reason in str(reply.embeds)
    assert versions_showing(reply, FAILED) == 1


async def test_killed_between_posting_a_reroll_and_writing_its_message_id(
    fake_discord: FakeDiscord,
    start_bot: BotStarter,
    settings: Settings,
    emulator: Emulator,
    general: FakeChannel,
    alice: FakeMember,
    bob: FakeMember,
    moderator: FakeMember,
) -> None:
    """The reroll's message went out with the job's nonce; the restart posts it again with the same nonce, Discord
    hands back the first message, and the job carries on in it: one message, one image."""
    async with start_bot() as first:
        interaction = await alice.run_command("imagine", general, prompt="a reroll caught mid-post")
        original = await reply_showing(fake_discord, interaction, DONE)
        assert first.store is not None
        [source] = await first.store.jobs_for_user(alice.id)
        await admin(moderator, general, "set server-jobs", limit=1)
        emulator.config.queue_time = Duration.constant(3.0)
        holder = await moderator.run_command("imagine", general, prompt="holds the only slot")
        await reply_showing(fake_discord, holder, "Queued")
        with fake_discord.hold("POST /channels/{channel_id}/messages") as held:
            await bob.click(original, f"imagine:reroll:{source.id}")
            await fake_discord.wait_for(lambda: held.waiting == 1, 10)
            [reroll] = await first.store.children(source.id)
            assert reroll.origin.message_id is None
        await fake_discord.wait_for(lambda: any(m.referenced is original for m in general.messages), 10)
        async with asyncio.timeout(10):
            while True:
                waiting = await first.store.get(reroll.id)
                if waiting is not None and waiting.origin.message_id is not None:
                    break
                await asyncio.sleep(0.02)
        assert waiting.state is JobState.WAITING  # still in line behind the holder
        # What a kill right after Discord's answer leaves: the message exists, its id was never written.
        await first.store.update(reroll.id, now=datetime.now(UTC), message_id=None)
    emulator.config.queue_time = Duration.constant(0.2)
    async with start_bot() as second:
        job = await job_in_state(second, reroll.id, JobState.DELIVERED, within=20)
    posted = [m for m in general.messages if m.referenced is original]
    assert len(posted) == 1
    assert job.origin.message_id == posted[0].id
    assert versions_showing(posted[0], DONE) == 1
    assert emulator.submits_for("a reroll caught mid-post") == 2
