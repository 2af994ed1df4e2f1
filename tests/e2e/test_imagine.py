"""/imagine end to end: a slash command in, the messages and edits a member sees out."""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from bot.app import ImagineBot
from bot.emulator import Duration, Emulator, Fault
from bot.model_spec import RATIO_VALUES, ratio_value
from storage.models import JobState
from tests.e2e.conftest import BotStarter, job_in_state, reply_showing
from tests.fakediscord import FakeChannel, FakeDiscord, FakeGuild, FakeMember, FakeMessage, Perm
from tests.fakediscord.ratelimit import MESSAGE_EDIT


@pytest.mark.parametrize("ratio", RATIO_VALUES)
async def test_happy_path_delivers_the_image_in_the_reply(
    fake_discord: FakeDiscord, bot: ImagineBot, emulator: Emulator, alice: FakeMember, general: FakeChannel, ratio: str
) -> None:
    interaction = await alice.run_command(
        "imagine", general, prompt="a red fox, watercolor", aspect_ratio=ratio, seed=7
    )
    await interaction.wait_until_acked()
    assert interaction.ack_type == 5
    assert not interaction.ephemeral
    message = await reply_showing(fake_discord, interaction, "Done")
    [attachment] = message.attachments
    with Image.open(io.BytesIO(attachment.data)) as image:
        assert image.width / image.height == pytest.approx(ratio_value(ratio), rel=0.02)
    assert attachment.filename.startswith("imagine-")
    assert attachment.description == "a red fox, watercolor"
    [embed] = message.embeds
    assert embed["image"]["url"].endswith(f"/{attachment.filename}")  # attachment:// resolved by Discord
    fields = {field["name"]: field["value"] for field in embed["fields"]}
    assert fields["Seed"] == "`7`"
    assert fields["Aspect ratio"].startswith(ratio)
    assert fields["Requested by"] == f"<@{alice.id}>"
    assert not fake_discord.failed_interactions
    assert emulator.submits_for("a red fox, watercolor", 7, ratio) == 1
    assert bot.store is not None
    [job] = await bot.store.jobs_for_user(alice.id)
    job = await job_in_state(bot, job.id, JobState.DELIVERED)
    assert job.delivery == "interaction"
    assert job.origin.interaction_token is None


def contents(message: FakeMessage) -> list[str]:
    return [version.content for version in message.versions]


async def test_status_edits_show_queue_positions_then_generating_then_the_result(
    fake_discord: FakeDiscord, bot: ImagineBot, emulator: Emulator, alice: FakeMember, general: FakeChannel
) -> None:
    emulator.config.queue_time = Duration.constant(1.2)
    emulator.config.queue_position_start = 3
    emulator.config.run_time = Duration.constant(0.6)
    interaction = await alice.run_command("imagine", general, prompt="a lighthouse at dusk")
    message = await reply_showing(fake_discord, interaction, "Done")
    seen = contents(message)
    queued = [text for text in seen if "Queued · #" in text]
    assert queued, seen
    assert "Queued · #3" in queued[0]
    generating = [i for i, text in enumerate(seen) if "Generating" in text]
    assert generating, seen
    assert max(i for i, text in enumerate(seen) if "Queued" in text) < generating[0] < len(seen) - 1
    assert "<t:" in seen[generating[0]]  # a live relative timestamp, no edit per second
    positions = [int(text.split("Queued · #")[1][0]) for text in queued]
    assert positions == sorted(positions, reverse=True)
    assert fake_discord.rate_limited_count == 0
    # The cancel button is offered only while queued.
    assert all("imagine:cancel:" in str(v.components) for v in message.versions if "Queued · #" in v.content)
    assert "imagine:cancel:" not in str(message.components)


async def test_reroll_button_starts_a_new_job_replying_to_the_original(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    alice: FakeMember,
    bob: FakeMember,
    general: FakeChannel,
) -> None:
    interaction = await alice.run_command("imagine", general, prompt="a paper boat", seed=11)
    original = await reply_showing(fake_discord, interaction, "Done")
    job_id = original.embeds[0]["footer"]["text"].removeprefix("Job ")
    click = await bob.click(original, f"imagine:reroll:{job_id}")
    await click.wait_until_acked()
    assert click.ack_type == 6  # the original stays as it is

    def reroll() -> FakeMessage | None:
        return next((m for m in general.messages if m.referenced is original and "Done" in m.content), None)

    message = await fake_discord.wait_for(reroll, 10)
    assert f"<@{bob.id}>" in message.content
    assert message.attachments
    assert emulator.submits_for("a paper boat") == 2
    seeds = [record.body["seed"] for record in emulator.submits]
    assert seeds[0] == 11
    assert bot.store is not None
    [child] = await bot.store.children(int(job_id))
    assert child.origin.user_id == bob.id
    await job_in_state(bot, child.id, JobState.DELIVERED)


async def test_double_click_and_reaction_start_one_reroll(
    fake_discord: FakeDiscord, bot: ImagineBot, emulator: Emulator, alice: FakeMember, general: FakeChannel
) -> None:
    interaction = await alice.run_command("imagine", general, prompt="a snow globe")
    original = await reply_showing(fake_discord, interaction, "Done")
    job_id = original.embeds[0]["footer"]["text"].removeprefix("Job ")
    first = await alice.click(original, f"imagine:reroll:{job_id}")
    second = await alice.click(original, f"imagine:reroll:{job_id}")
    await alice.react(original, "🔄")
    await first.wait_until_acked()
    await second.wait_until_acked()
    answered = await second.wait_for_message()
    assert "Already rerolling" in answered.content
    assert answered.ephemeral
    await fake_discord.wait_for(lambda: len(emulator.submits) == 2, 10)
    await asyncio.sleep(0.3)
    assert emulator.submits_for("a snow globe") == 2


@pytest.mark.parametrize("cached", [True, False], ids=["cached", "after-restart"])
async def test_reaction_rerolls_a_result(
    fake_discord: FakeDiscord,
    start_bot: BotStarter,
    emulator: Emulator,
    alice: FakeMember,
    bob: FakeMember,
    general: FakeChannel,
    cached: bool,
) -> None:
    async with start_bot() as first:
        interaction = await alice.run_command("imagine", general, prompt="a copper kettle")
        original = await reply_showing(fake_discord, interaction, "Done")
        assert first.store is not None
        [job] = await first.store.jobs_for_user(alice.id)
        await job_in_state(first, job.id, JobState.DELIVERED)
        if cached:
            await bob.react(original, "🔄")
            await fake_discord.wait_for(lambda: emulator.submits_for("a copper kettle") == 2, 10)
            return
    async with start_bot():  # a new process: the message is in no cache
        await bob.react(original, "🔄")
        await fake_discord.wait_for(lambda: emulator.submits_for("a copper kettle") == 2, 10)
        reroll = await fake_discord.wait_for(
            lambda: next((m for m in general.messages if m.referenced is original and "Done" in m.content), None), 10
        )
        assert f"<@{bob.id}>" in reroll.content


async def test_reactions_by_the_bot_other_emoji_and_on_other_messages_are_ignored(
    fake_discord: FakeDiscord, bot: ImagineBot, emulator: Emulator, alice: FakeMember, general: FakeChannel
) -> None:
    interaction = await alice.run_command("imagine", general, prompt="a teapot")
    original = await reply_showing(fake_discord, interaction, "Done")
    await fake_discord.set_reaction(original, "🔄", fake_discord.bot_user.id, add=True)
    await alice.react(original, "👍")
    plain = await alice.send(general, "just chatting")
    await alice.react(plain, "🔄")
    await asyncio.sleep(0.5)
    assert len(emulator.submits) == 1


async def test_cancel_while_queued_and_too_late(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    alice: FakeMember,
    bob: FakeMember,
    general: FakeChannel,
) -> None:
    emulator.config.queue_time = Duration.constant(30.0)
    interaction = await alice.run_command("imagine", general, prompt="a slow queue")
    message = await reply_showing(fake_discord, interaction, "Queued")
    assert bot.store is not None
    [job] = await bot.store.jobs_for_user(alice.id)
    refused = await bob.click(message, f"imagine:cancel:{job.id}")
    assert "Only the member who asked" in (await refused.wait_for_message()).content
    click = await alice.click(message, f"imagine:cancel:{job.id}")
    answer = await click.wait_for_message()
    await fake_discord.wait_for(lambda: click.followups and "nothing was charged" in click.followups[-1].content, 10)
    assert answer.ephemeral
    await reply_showing(fake_discord, interaction, "Cancelled")
    await job_in_state(bot, job.id, JobState.CANCELLED)

    emulator.config.queue_time = Duration.constant(0.0)
    emulator.config.run_time = Duration.constant(30.0)
    late = await alice.run_command("imagine", general, prompt="already running")
    running = await reply_showing(fake_discord, late, "Generating")
    # No cancel button once it runs: the member is not offered what cannot work.
    assert "imagine:cancel" not in str(running.components)


async def test_cancel_that_loses_the_race_says_it_will_be_billed(
    fake_discord: FakeDiscord, bot: ImagineBot, emulator: Emulator, alice: FakeMember, general: FakeChannel
) -> None:
    emulator.config.queue_time = Duration.constant(30.0)
    interaction = await alice.run_command("imagine", general, prompt="a race")
    message = await reply_showing(fake_discord, interaction, "Queued")
    assert bot.store is not None
    [job] = await bot.store.jobs_for_user(alice.id)
    emulator.inject("cancel", Fault.http(202, {"request_id": job.request_id, "outcome": "not_cancellable"}))
    click = await alice.click(message, f"imagine:cancel:{job.id}")
    await fake_discord.wait_for(lambda: click.followups and "Too late" in click.followups[-1].content, 10)
    assert "billed" in click.followups[-1].content


async def test_job_finishing_after_token_expiry_is_delivered_by_channel_edit(
    fake_discord: FakeDiscord, bot: ImagineBot, emulator: Emulator, alice: FakeMember, general: FakeChannel
) -> None:
    emulator.config.queue_time = Duration.constant(1.0)
    interaction = await alice.run_command("imagine", general, prompt="a patient owl")
    await reply_showing(fake_discord, interaction, "Queued")
    fake_discord.clock.advance(16 * 60)
    message = await reply_showing(fake_discord, interaction, "Done")
    assert message.attachments
    assert bot.store is not None
    [job] = await bot.store.jobs_for_user(alice.id)
    job = await job_in_state(bot, job.id, JobState.DELIVERED)
    assert job.delivery == "channel_edit"


async def test_oversized_image_is_reencoded_under_the_upload_limit(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    alice: FakeMember,
    general: FakeChannel,
    guild: FakeGuild,
) -> None:
    emulator.config.full_size = True
    limit = 400 * 1024
    guild.upload_limit_override = limit
    interaction = await alice.run_command("imagine", general, prompt="a detailed city map", aspect_ratio="16:9")
    message = await reply_showing(fake_discord, interaction, "Done", within=30)
    [attachment] = message.attachments
    assert attachment.size <= limit
    with Image.open(io.BytesIO(attachment.data)) as image:
        assert image.format in ("WEBP", "JPEG")
        assert image.width / image.height == pytest.approx(16 / 9, rel=0.02)
    assert not any(request.status == 413 for request in fake_discord.requests)


async def test_mentions_in_the_prompt_ping_no_one(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    alice: FakeMember,
    bob: FakeMember,
    general: FakeChannel,
    guild: FakeGuild,
) -> None:
    mods = next(role for role in guild.roles.values() if role.name == "Moderators")
    guild.bot_role.permissions |= Perm.MENTION_EVERYONE  # only allowed_mentions stands between the prompt and a ping
    await fake_discord.sync_guild(guild)
    prompt = f"@everyone @here <@&{mods.id}> <@{bob.id}> look at this"
    interaction = await alice.run_command("imagine", general, prompt=prompt)
    message = await reply_showing(fake_discord, interaction, "Done")
    pings = message.all_pings()
    assert not pings.everyone
    assert not pings.here
    assert not pings.roles
    assert not pings.users
    assert "@everyone" in message.content or "@everyone" in message.embeds[0]["description"]


@pytest.mark.parametrize(
    ("denied", "named"),
    [(Perm.ATTACH_FILES, "Attach Files"), (Perm.EMBED_LINKS, "Embed Links"), (Perm.SEND_MESSAGES, "Send Messages")],
)
async def test_missing_channel_permission_is_named_and_nothing_is_spent(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    alice: FakeMember,
    general: FakeChannel,
    guild: FakeGuild,
    denied: Perm,
    named: str,
) -> None:
    general.set_overwrite(guild.bot_role, deny=denied)
    await fake_discord.update_channel(general)
    interaction = await alice.run_command("imagine", general, prompt="a locked door")
    answer = await interaction.wait_for_message()
    assert answer.ephemeral
    assert named in answer.content
    assert emulator.submits == []
    assert bot.store is not None
    assert await bot.store.jobs_for_user(alice.id) == []


@pytest.mark.parametrize(
    ("setup", "shown"),
    [
        ("failure", "failed to generate"),
        ("moderation", "content rules"),
    ],
)
async def test_runcomfy_failures_turn_the_reply_into_a_clear_failure(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    alice: FakeMember,
    general: FakeChannel,
    setup: str,
    shown: str,
) -> None:
    if setup == "failure":
        emulator.config.failure_rate = 1.0
    else:
        emulator.config.failure_rate = 1.0
        emulator.config.failure_message = "NSFW content detected in prompt"
    interaction = await alice.run_command("imagine", general, prompt="a risky prompt")
    message = await reply_showing(fake_discord, interaction, "Failed")
    text = str(message.embeds)
    assert shown in text
    assert "NSFW content detected" not in text
    assert not message.attachments


async def test_out_of_credit_keeps_the_job_waiting_instead_of_failing_it(
    fake_discord: FakeDiscord, bot: ImagineBot, emulator: Emulator, alice: FakeMember, general: FakeChannel
) -> None:
    """RunComfy's 400002 creates nothing: the member's job waits for the credit (tests/e2e/test_public_bot.py)."""
    emulator.inject("submit", Fault.error_code(400002, message="insufficient balance"))
    interaction = await alice.run_command("imagine", general, prompt="a patient prompt")
    message = await reply_showing(fake_discord, interaction, "out of credit")
    assert "Failed" not in message.content


async def test_restart_mid_job_finishes_it_once(
    fake_discord: FakeDiscord, start_bot: BotStarter, emulator: Emulator, alice: FakeMember, general: FakeChannel
) -> None:
    emulator.config.queue_time = Duration.constant(0.3)
    emulator.config.run_time = Duration.constant(1.5)
    async with start_bot():
        interaction = await alice.run_command("imagine", general, prompt="a phoenix")
        await reply_showing(fake_discord, interaction, "Generating")
    async with start_bot() as second:
        message = await reply_showing(fake_discord, interaction, "Done")
        assert second.store is not None
        [job] = await second.store.jobs_for_user(alice.id)
        await job_in_state(second, job.id, JobState.DELIVERED)
        assert len(message.attachments) == 1
    assert len(emulator.submits) == 1
    done_edits = [version for version in message.versions if "Done" in version.content]
    assert len(done_edits) == 1


async def test_buttons_on_old_results_work_after_a_restart(
    fake_discord: FakeDiscord, start_bot: BotStarter, emulator: Emulator, alice: FakeMember, general: FakeChannel
) -> None:
    async with start_bot() as first:
        interaction = await alice.run_command("imagine", general, prompt="a bonsai")
        original = await reply_showing(fake_discord, interaction, "Done")
        assert first.store is not None
        [job] = await first.store.jobs_for_user(alice.id)
        await job_in_state(first, job.id, JobState.DELIVERED)
    async with start_bot():
        click = await alice.click(original, f"imagine:reroll:{job.id}")
        await click.wait_until_acked()
        await fake_discord.wait_for(lambda: emulator.submits_for("a bonsai") == 2, 10)


async def test_a_reply_deleted_while_queued_cancels_the_job_upstream_and_sends_nothing_more(
    fake_discord: FakeDiscord, bot: ImagineBot, emulator: Emulator, alice: FakeMember, general: FakeChannel
) -> None:
    emulator.config.queue_time = Duration.constant(5.0)
    interaction = await alice.run_command("imagine", general, prompt="a fleeting thought")
    message = await reply_showing(fake_discord, interaction, "Queued")
    seen = len(fake_discord.requests)
    await fake_discord.delete_message(message)
    assert bot.store is not None
    [job] = await bot.store.jobs_for_user(alice.id)
    job = await job_in_state(bot, job.id, JobState.CANCELLED)
    assert job.deleted_at is not None
    assert job.request_id is not None
    assert emulator.jobs[job.request_id].cancelled_at is not None  # nothing billed for a reply nobody can see
    await asyncio.sleep(0.5)
    # An edit already on its way as the member deleted the reply meets "unknown message"; after that, nothing.
    sends = [r for r in fake_discord.requests[seen:] if r.method in ("PATCH", "POST") and "/messages" in r.path]
    assert len(sends) <= 1
    assert all(r.error_code == 10008 for r in sends)


@pytest.mark.parametrize("prompt", ["   ", "\u200b"[:0] + " \t "])
async def test_blank_prompt_gets_a_friendly_ephemeral_answer(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    alice: FakeMember,
    general: FakeChannel,
    prompt: str,
) -> None:
    interaction = await alice.run_command("imagine", general, prompt=prompt)
    answer = await interaction.wait_for_message()
    assert answer.ephemeral
    assert "empty" in answer.content
    assert emulator.submits == []


async def test_stale_button_on_another_message_gets_a_clear_answer(
    fake_discord: FakeDiscord, bot: ImagineBot, emulator: Emulator, alice: FakeMember, general: FakeChannel
) -> None:
    first = await alice.run_command("imagine", general, prompt="first")
    one = await reply_showing(fake_discord, first, "Done")
    second = await alice.run_command("imagine", general, prompt="second")
    two = await reply_showing(fake_discord, second, "Done")
    # Discord only sends custom_ids that are on the message; a button of job 1 on message 2 is forged.
    forged_id = one.components[0]["components"][0]["custom_id"]
    two.current.components = one.components
    click = await alice.click(two, forged_id)
    answer = await click.wait_for_message()
    assert answer.ephemeral
    assert "don't know" in answer.content
    assert len(emulator.submits) == 2


async def test_many_jobs_in_one_channel_never_meet_a_rate_limit(
    fake_discord: FakeDiscord, bot: ImagineBot, emulator: Emulator, guild: FakeGuild, general: FakeChannel
) -> None:
    # Discord's edit limit, unadvertised so discord.py cannot wait for it: only our own throttle can keep under it.
    fake_discord.ratelimits.set_bucket(MESSAGE_EDIT, limit=5, per=5.0, advertise=False)
    emulator.config.queue_time = Duration.uniform(0.5, 2.5)
    emulator.config.run_time = Duration.uniform(0.5, 1.5)
    members = [guild.add_member(f"member{index}") for index in range(8)]
    interactions = [
        await member.run_command("imagine", general, prompt=f"crowd {i}") for i, member in enumerate(members)
    ]
    for interaction in interactions:
        await interaction.wait_until_acked()
    fake_discord.clock.advance(16 * 60)  # every token expired: all edits go through the channel route
    for interaction in interactions:
        await reply_showing(fake_discord, interaction, "Done", within=60)
    assert fake_discord.rate_limited_count == 0
    assert all(len(i.original_message.attachments) == 1 for i in interactions if i.original_message)


async def test_reply_that_cannot_be_edited_falls_back_to_a_new_message(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    alice: FakeMember,
    bob: FakeMember,
    general: FakeChannel,
) -> None:
    emulator.config.queue_time = Duration.constant(0.5)
    interaction = await alice.run_command("imagine", general, prompt=f"hello <@{bob.id}>")
    await reply_showing(fake_discord, interaction, "Queued")
    fake_discord.clock.advance(16 * 60)
    fake_discord.inject_fault(MESSAGE_EDIT, 403, times=None)
    posted = await fake_discord.wait_for(
        lambda: next((m for m in general.messages if m.attachments and m is not interaction.original_message), None), 15
    )
    assert f"<@{alice.id}> your image is ready" in posted.content
    assert posted.pings.users == frozenset({alice.id})  # the requester, and nobody named in the prompt
    assert bot.store is not None
    [job] = await bot.store.jobs_for_user(alice.id)
    job = await job_in_state(bot, job.id, JobState.DELIVERED)
    assert job.delivery == "new_message"


async def test_a_channel_deleted_while_the_job_runs_ends_it_without_further_sends(
    fake_discord: FakeDiscord, bot: ImagineBot, emulator: Emulator, alice: FakeMember, guild: FakeGuild
) -> None:
    emulator.config.queue_time = Duration.constant(0.1)
    emulator.config.run_time = Duration.constant(1.0)
    channel = guild.add_channel("temporary")
    await fake_discord.sync_guild(guild)
    interaction = await alice.run_command("imagine", channel, prompt="into the void")
    await reply_showing(fake_discord, interaction, "Generating")
    await fake_discord.delete_channel(channel)
    assert bot.store is not None
    [job] = await bot.store.jobs_for_user(alice.id)
    job = await job_in_state(bot, job.id, JobState.UNDELIVERABLE)  # made (and billed) while running, shown nowhere
    assert job.deleted_at is not None
    assert job.delivery_error is not None
    assert emulator.submits_for("into the void") == 1
    assert not [r for r in fake_discord.requests if r.status == 404 and r.error_code == 10003]  # never sent there
