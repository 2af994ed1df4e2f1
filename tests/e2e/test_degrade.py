"""When Discord will not take the image as it is, the member still gets an answer, and never two.

Attach Files or Embed Links taken away mid-job, a file too large, a reply the
bot cannot edit, an answer lost after Discord created the message.
"""

from __future__ import annotations

import pytest

from bot.app import ImagineBot
from bot.emulator import Duration, Emulator
from storage.models import JobState
from tests.e2e.conftest import BotStarter, job_in_state, reply_showing
from tests.fakediscord import FakeChannel, FakeDiscord, FakeGuild, FakeMember, Perm
from tests.fakediscord.ratelimit import MESSAGE_EDIT

CREATE = "POST /channels/{channel_id}/messages"


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
