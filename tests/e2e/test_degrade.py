"""When Discord will not take the image as it is, the member still gets an answer, and never two.

Attach Files or Embed Links taken away mid-job, a file too large, a reply the
bot cannot edit, an answer lost after Discord created the message or made the
edit.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from bot.app import ImagineBot
from bot.emulator import Duration, Emulator
from cogs.courier import ALREADY_SHOWN
from storage.models import Job, JobState
from tests.e2e.conftest import BotStarter, job_in_state, reply_showing
from tests.fakediscord import FakeChannel, FakeDiscord, FakeGuild, FakeMember, FakeMessage, Perm, RouteInfo
from tests.fakediscord.ratelimit import MESSAGE_EDIT
from tests.fakediscord.server import DROP, RecordedRequest

CREATE = "POST /channels/{channel_id}/messages"
CHANNEL_READ = "GET /channels/{channel_id}/messages/{message_id}"
DONE = "✅ Done"


TOKEN_MESSAGE = re.compile(r"/webhooks/\d+/[^/]+/messages/")  # the reply through its token: @original or its id


def by_token(method: str) -> Callable[[RouteInfo], bool]:
    """A fault's match: requests with this method on the reply through the interaction token."""
    return lambda info: info.method == method and TOKEN_MESSAGE.search(info.path) is not None


def token_reads(fake: FakeDiscord) -> list[RecordedRequest]:
    return [r for r in fake.requests if r.method == "GET" and TOKEN_MESSAGE.search(r.path)]


def done_versions(message: FakeMessage) -> int:
    return sum(1 for version in message.versions if DONE in version.content)


async def imagine_with_its_final_answer_lost(
    fake: FakeDiscord, bot: ImagineBot, emulator: Emulator, member: FakeMember, channel: FakeChannel
) -> tuple[FakeMessage, Job]:
    """/imagine whose final edit reaches Discord while the bot never learns it did: the token route's connection
    is cut (nothing made), then the channel route makes the edit and its answer is lost (503, which discord.py
    does not retry). The reply already shows the image when the delivery tries again; returns it and the job."""
    emulator.config.run_time = Duration.constant(1.0)
    interaction = await member.run_command("imagine", channel, prompt="shown once, whatever was lost")
    reply = await reply_showing(fake, interaction, "Generating")  # the last passing edit: the next is final
    fake.inject_fault(by_token("PATCH"), DROP)
    fake.inject_fault(MESSAGE_EDIT, 503, after=True)
    assert bot.store is not None
    [job] = await bot.store.jobs_for_user(member.id)
    return reply, job


@pytest.mark.parametrize("told", [True, False], ids=["bot-told-of-the-change", "bot-finds-out-from-discord"])
async def test_attach_files_removed_mid_job_gets_a_text_answer_naming_it(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    alice: FakeMember,
    guild: FakeGuild,
    general: FakeChannel,
    told: bool,
) -> None:
    emulator.config.run_time = Duration.constant(1.0)
    interaction = await alice.run_command("imagine", general, prompt="a lighthouse in fog")
    await reply_showing(fake_discord, interaction, "Generating")
    general.set_overwrite(guild.bot_role, deny=Perm.ATTACH_FILES)
    if told:
        await fake_discord.update_channel(general)  # CHANNEL_UPDATE: the bot's cache knows before it tries
    reply = await reply_showing(fake_discord, interaction, "Attach Files", within=15)
    assert "/imagine-history" in reply.content
    assert not reply.attachments
    assert bot.store is not None
    [job] = await bot.store.jobs_for_user(alice.id)
    job = await job_in_state(bot, job.id, JobState.DELIVERED)
    assert job.delivery == "text"
    assert job.result_url is not None
    assert job.result_url in reply.content  # where to get the image now


async def test_without_embed_links_the_image_comes_with_plain_text_details(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    alice: FakeMember,
    guild: FakeGuild,
    general: FakeChannel,
) -> None:
    emulator.config.run_time = Duration.constant(1.0)
    interaction = await alice.run_command("imagine", general, prompt="a quiet harbour", seed=31)
    await reply_showing(fake_discord, interaction, "Generating")
    general.set_overwrite(guild.bot_role, deny=Perm.EMBED_LINKS)
    await fake_discord.update_channel(general)
    reply = await reply_showing(fake_discord, interaction, "Done", within=15)
    assert reply.attachments
    assert "seed `31`" in reply.content
    assert "Embed Links" in reply.content


async def test_a_lost_answer_to_the_fallback_message_never_posts_it_twice(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    alice: FakeMember,
    general: FakeChannel,
) -> None:
    """The reply cannot be edited (token expired, edits refused), so the image goes in a new message; Discord
    creates it but the answer is lost. The next attempt sends the same nonce and gets that message back."""
    emulator.config.queue_time = Duration.constant(0.5)
    interaction = await alice.run_command("imagine", general, prompt="posted exactly once")
    await reply_showing(fake_discord, interaction, "Queued")
    fake_discord.clock.advance(16 * 60)
    fake_discord.inject_fault(MESSAGE_EDIT, 403, times=None)
    fake_discord.inject_fault(CREATE, 503, after=True)  # created, then the answer lost (503: discord.py does not retry)
    posted = await fake_discord.wait_for(
        lambda: next((m for m in general.messages if m.attachments and m is not interaction.original_message), None),
        15,
    )
    assert bot.store is not None
    [job] = await bot.store.jobs_for_user(alice.id)
    job = await job_in_state(bot, job.id, JobState.DELIVERED, within=60)
    assert job.delivery == "new_message"
    assert job.origin.message_id == posted.id  # the message now showing the job, for 🔄 and ✉️
    assert len(fake_discord.requests_to(CREATE)) >= 2  # it was sent again...
    assert [m for m in general.messages if m.attachments] == [posted]  # ...and shown once
    assert posted.pings.users == frozenset({alice.id})


async def test_without_read_message_history_a_retry_after_a_lost_answer_shows_the_image_once(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    alice: FakeMember,
    guild: FakeGuild,
    general: FakeChannel,
) -> None:
    """The channel route cannot read the reply without Read Message History (403); the interaction token can,
    so the retry sees the image already there and leaves the reply alone."""
    general.set_overwrite(guild.bot_role, deny=Perm.READ_MESSAGE_HISTORY)
    reply, job = await imagine_with_its_final_answer_lost(fake_discord, bot, emulator, alice, general)
    job = await job_in_state(bot, job.id, JobState.DELIVERED, within=20)
    assert job.delivery_attempts == 2
    assert job.delivery == ALREADY_SHOWN
    assert done_versions(reply) == 1
    assert reply.attachments
    assert [r.status for r in token_reads(fake_discord)] == [200]
    assert fake_discord.requests_to(CHANNEL_READ) == []


async def test_when_the_token_cannot_read_the_reply_the_channel_route_does(
    fake_discord: FakeDiscord, bot: ImagineBot, emulator: Emulator, alice: FakeMember, general: FakeChannel
) -> None:
    """The token route answering 5xx (discord.py retries those for ~25 s, the courier waits a few) does not make
    the retry edit blindly: it reads the reply through the channel, and finds the image there."""
    reply, job = await imagine_with_its_final_answer_lost(fake_discord, bot, emulator, alice, general)
    fake_discord.inject_fault(by_token("GET"), 503, times=None)
    job = await job_in_state(bot, job.id, JobState.DELIVERED, within=30)
    assert job.delivery == ALREADY_SHOWN
    assert done_versions(reply) == 1
    assert token_reads(fake_discord)
    assert [r.status for r in fake_discord.requests_to(CHANNEL_READ)] == [200]


async def test_a_reroll_retried_after_a_lost_answer_reads_its_message_through_the_channel(
    fake_discord: FakeDiscord, bot: ImagineBot, emulator: Emulator, alice: FakeMember, general: FakeChannel
) -> None:
    """A reroll is a message the bot posted, with no interaction token: the channel route is how it is read."""
    interaction = await alice.run_command("imagine", general, prompt="a reroll shown once")
    original = await reply_showing(fake_discord, interaction, DONE)
    job_id = int(original.embeds[0]["footer"]["text"].removeprefix("Job "))
    emulator.config.run_time = Duration.constant(1.0)
    click = await alice.click(original, f"imagine:reroll:{job_id}")
    await click.wait_until_acked()

    def generating() -> FakeMessage | None:
        return next((m for m in general.messages if m.referenced is original and "Generating" in m.content), None)

    reroll = await fake_discord.wait_for(generating, 10)
    fake_discord.inject_fault(MESSAGE_EDIT, 503, after=True)  # its final edit made, the answer lost
    assert bot.store is not None
    [child] = await bot.store.children(job_id)
    child = await job_in_state(bot, child.id, JobState.DELIVERED, within=20)
    assert child.delivery == ALREADY_SHOWN
    assert done_versions(reroll) == 1
    assert [r.status for r in fake_discord.requests_to(CHANNEL_READ)] == [200]
    assert token_reads(fake_discord) == []


async def test_a_file_too_large_even_re_encoded_gets_a_text_answer(
    fake_discord: FakeDiscord, start_bot: BotStarter, emulator: Emulator
) -> None:
    tiny = fake_discord.add_guild("Tiny Uploads", upload_limit=2048)  # no re-encoding gets an image that small
    channel = tiny.add_channel("art")
    member = tiny.add_member("carol")
    async with start_bot(discord_guild_ids=[tiny.id]) as bot:
        interaction = await member.run_command("imagine", channel, prompt="far too large")
        reply = await reply_showing(fake_discord, interaction, "larger than this server lets me upload", within=20)
        assert not reply.attachments
        assert bot.store is not None
        [job] = await bot.store.jobs_for_user(member.id)
        job = await job_in_state(bot, job.id, JobState.DELIVERED)
    assert job.delivery == "text"
    assert any(r.status == 413 for r in fake_discord.requests)
