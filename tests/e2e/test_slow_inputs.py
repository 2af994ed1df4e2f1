"""An edit's image is slow to come from Discord's CDN. Whatever it takes, the command is acknowledged within
Discord's 3 seconds, so the member never sees "This interaction failed": the job is written first (a member past a
limit is refused at once, ephemerally, before anything is shown or downloaded), then acknowledged, then given its
image and delivered. A refusal found once the image is in (too big, unreadable) reaches only the member and ends the
job unsent; a restart during the download answers the reply. An acknowledgement that fails stops everything before
the image is asked for.

Slowness is the fake's: a held CDN download while Discord's clock moves past the 3 seconds. (A remix reads nothing:
it shares the stored image of the edit it starts from.)"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable

import pytest
from prometheus_client import generate_latest

from bot.app import ImagineBot
from bot.attachments import FETCHES
from bot.emulator import Duration, Emulator
from bot.jobs.orders import SOURCE_EXPIRED
from cogs.failures import SOMETHING_WENT_WRONG
from storage.models import Job, JobState
from storage.sqlite import SQLiteJobStore
from tests.bot.test_health import samples
from tests.clocks import FakeDiscordClock
from tests.e2e.conftest import BotStarter, job_in_state, nothing_started, private_answer, reply_showing
from tests.e2e.test_community_support import admin, finished_image, job_for
from tests.e2e.test_models import png, submitted
from tests.e2e.test_public_bot import CALLBACK
from tests.fakediscord import (
    CDN_ROUTE,
    FakeChannel,
    FakeDiscord,
    FakeGuild,
    FakeInteraction,
    FakeMember,
    FakeMessage,
)
from tests.storage.faults import refuse_input_images

PAST_THE_WINDOW = 4.0  # seconds of Discord's clock: more than the 3 it gives to acknowledge


async def slowly_fetched(fake: FakeDiscord, start: Awaitable[FakeInteraction]) -> FakeInteraction:
    """The interaction `start` makes, its image's download held while Discord's 3 seconds pass."""
    with fake.hold(f"GET {CDN_ROUTE}") as held:
        interaction = await start
        await fake.wait_for(lambda: held.waiting)
        fake.clock.advance(PAST_THE_WINDOW)
    return interaction


Edit = Callable[[FakeDiscord, FakeMember, FakeChannel, str], Awaitable[FakeInteraction]]


async def by_attachment(fake: FakeDiscord, member: FakeMember, channel: FakeChannel, prompt: str) -> FakeInteraction:
    return await slowly_fetched(fake, member.run_command("imagine", channel, prompt=prompt, image=("me.png", png())))


async def by_edit_image(fake: FakeDiscord, member: FakeMember, channel: FakeChannel, prompt: str) -> FakeInteraction:
    result = await reply_showing(fake, await member.run_command("imagine", channel, prompt="a lighthouse"), "Done")
    menu = await member.run_message_command("Edit image", result)
    await menu.wait_until_acked()
    return await slowly_fetched(fake, member.submit_modal(menu, {"prompt": prompt}))


async def by_edit_button(fake: FakeDiscord, member: FakeMember, channel: FakeChannel, prompt: str) -> FakeInteraction:
    first = await member.run_command("imagine", channel, prompt="a lighthouse")
    result = await reply_showing(fake, first, "Done")
    [edit] = [item["custom_id"] for item in result.items() if str(item.get("custom_id")).startswith("imagine:edit:")]
    opened = await member.click(result, edit)
    await opened.wait_until_acked()
    return await slowly_fetched(fake, member.submit_modal(opened, {"prompt": prompt}))


@pytest.mark.parametrize("edit", [by_attachment, by_edit_image, by_edit_button])
async def test_an_edit_whose_image_downloads_slowly_is_acknowledged_in_time_and_delivered(
    fake_discord: FakeDiscord, bot: ImagineBot, emulator: Emulator, alice: FakeMember, general: FakeChannel, edit: Edit
) -> None:
    interaction = await edit(fake_discord, alice, general, "make it snow")
    await interaction.wait_until_acked()
    assert not interaction.failed, interaction.failed_reason
    assert not interaction.ephemeral  # the job's public reply, as for any /imagine
    await reply_showing(fake_discord, interaction, "Done")
    assert submitted(emulator, "make it snow")["image_urls"]
    job = await job_in_state(bot, (await job_for(bot, interaction)).id, JobState.DELIVERED)
    assert job.input_url is not None


async def test_an_edit_whose_image_is_refused_once_downloaded_is_told_only_to_the_member_and_starts_nothing(
    fake_discord: FakeDiscord, start_bot: BotStarter, emulator: Emulator, alice: FakeMember, general: FakeChannel
) -> None:
    async with start_bot(image_max_pixels=1000) as bot:
        interaction = await by_attachment(fake_discord, alice, general, "make it snow")
        answer = await private_answer(fake_discord, interaction)
        assert "too many pixels" in answer.content
        await nothing_started(bot, alice)
    assert general.visible_messages() == []
    assert emulator.submits == []


async def daily_quota_used(
    fake: FakeDiscord,
    emulator: Emulator,
    bot: ImagineBot,
    member: FakeMember,
    moderator: FakeMember,
    channel: FakeChannel,
) -> None:
    await admin(moderator, channel, "set daily-quota", limit=1)
    await finished_image(fake, bot, member, channel, "the day's one")


async def line_share_full(
    fake: FakeDiscord,
    emulator: Emulator,
    bot: ImagineBot,
    member: FakeMember,
    moderator: FakeMember,
    channel: FakeChannel,
) -> None:
    emulator.config.queue_time = Duration.constant(30.0)  # the first stays in progress, the second waits
    await admin(moderator, channel, "set member-jobs", limit=1)
    await admin(moderator, channel, "set member-queue", limit=1)
    await reply_showing(fake, await member.run_command("imagine", channel, prompt="runs"), "Queued")
    waits = await member.run_command("imagine", channel, prompt="waits")
    await reply_showing(fake, waits, "Waiting for one of your images to finish")


async def budget_spent(
    fake: FakeDiscord,
    emulator: Emulator,
    bot: ImagineBot,
    member: FakeMember,
    moderator: FakeMember,
    channel: FakeChannel,
) -> None:
    """Nothing to do: the bot runs with less left of the operator's daily budget than an edit costs ($0.07)."""


Reach = Callable[[FakeDiscord, Emulator, ImagineBot, FakeMember, FakeMember, FakeChannel], Awaitable[None]]
"""Brings the member to a limit, with the moderator's help where a server's setting is needed."""


@pytest.mark.parametrize(
    ("overrides", "reach", "says"),
    [
        ({}, daily_quota_used, "You've made 1 of your 1 images for the last 24 hours here."),
        ({}, line_share_full, "You already have 1 image waiting in this server's line, and it holds up to 1 of"),
        ({"budget_usd_per_day": 0.05}, budget_spent, "This would cost about $0.07, and this bot has $0.05 left"),
    ],
    ids=["daily quota used", "share of the line full", "past the operator's budget"],
)
async def test_an_edit_past_a_limit_is_refused_at_once_showing_downloading_and_writing_nothing(
    fake_discord: FakeDiscord,
    start_bot: BotStarter,
    emulator: Emulator,
    alice: FakeMember,
    moderator: FakeMember,
    general: FakeChannel,
    overrides: dict[str, float],
    reach: Reach,
    says: str,
) -> None:
    async with start_bot(**overrides) as bot:
        await reach(fake_discord, emulator, bot, alice, moderator, general)
        with fake_discord.hold(f"GET {CDN_ROUTE}") as cdn:
            cdn.release()  # not held, only counted: `waiting` counts every download asked for
            interaction = await alice.run_command("imagine", general, prompt="make it snow", image=("me.png", png()))
            answer = await private_answer(fake_discord, interaction)
        assert says in answer.content
        assert interaction.ephemeral  # the first answer: no public "thinking..." came before it
        assert interaction.followups == []
        assert cdn.waiting == 0  # the member's image was never asked for
        assert bot.store is not None
        assert "make it snow" not in {job.prompt for job in await bot.store.jobs_for_user(alice.id)}
    assert emulator.submits_for("make it snow") == 0


async def test_an_edit_holds_its_members_place_while_its_image_downloads(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    alice: FakeMember,
    moderator: FakeMember,
    general: FakeChannel,
) -> None:
    """The edit is written, its limits checked, before its download: a member who sends another command meanwhile
    is told the edit took their last image of the day, and the edit goes on."""
    await admin(moderator, general, "set daily-quota", limit=1)
    with fake_discord.hold(f"GET {CDN_ROUTE}") as held:
        edit = await alice.run_command("imagine", general, prompt="make it snow", image=("me.png", png()))
        await fake_discord.wait_for(lambda: held.waiting)
        other = await private_answer(fake_discord, await alice.run_command("imagine", general, prompt="one more"))
        assert "You've made 1 of your 1 images for the last 24 hours here." in other.content
    await reply_showing(fake_discord, edit, "Done")
    assert emulator.submits_for("one more") == 0


async def test_a_burst_of_edits_waits_for_its_turns_to_download_and_every_one_is_delivered(
    fake_discord: FakeDiscord, bot: ImagineBot, alice: FakeMember, general: FakeChannel
) -> None:
    with fake_discord.hold(f"GET {CDN_ROUTE}") as held:
        burst = [
            await alice.run_command("imagine", general, prompt=f"make it snow {n}", image=("me.png", png()))
            for n in range(FETCHES + 1)
        ]
        for interaction in burst:
            await interaction.wait_until_acked()
            assert not interaction.failed, interaction.failed_reason
        await fake_discord.wait_for(lambda: held.waiting == FETCHES)  # the last one waits, holding no bytes
    for interaction in burst:
        await reply_showing(fake_discord, interaction, "Done")


async def test_an_edit_whose_acknowledgement_is_lost_fetches_and_starts_nothing(
    fake_discord: FakeDiscord, bot: ImagineBot, emulator: Emulator, alice: FakeMember, general: FakeChannel
) -> None:
    fake_discord.inject_fault(CALLBACK, 0, times=1)  # the acknowledgement's connection is cut
    with fake_discord.hold(f"GET {CDN_ROUTE}") as held:
        lost = await alice.run_command("imagine", general, prompt="make it snow", image=("me.png", png()))
        answer = await private_answer(fake_discord, lost)  # "something went wrong", the next callback getting through
        assert answer.content == SOMETHING_WENT_WRONG
        assert held.waiting == 0  # the image was never asked for
    await nothing_started(bot, alice)
    assert emulator.submits == []


async def edited(
    fake: FakeDiscord, bot: ImagineBot, member: FakeMember, channel: FakeChannel
) -> tuple[FakeMessage, Job]:
    """An edit of the member's attachment, delivered: its message and job."""
    interaction = await member.run_command("imagine", channel, prompt="a street", image=("me.png", png()))
    message = await reply_showing(fake, interaction, "Done")
    return message, await job_in_state(bot, (await job_for(bot, interaction)).id, JobState.DELIVERED)


async def remixed(
    fake: FakeDiscord, member: FakeMember, message: FakeMessage, job: Job, prompt: str
) -> FakeInteraction:
    """The job's 🎛️ Remix form opened and sent with `prompt`."""
    opened = await member.click(message, f"imagine:remix:{job.id}")
    await opened.wait_until_acked()
    return await member.submit_modal(opened, {"prompt": prompt})


async def test_a_remix_whose_source_link_died_is_told_only_to_the_member_and_writes_no_job(
    fake_discord: FakeDiscord,
    start_bot: BotStarter,
    emulator: Emulator,
    alice: FakeMember,
    general: FakeChannel,
) -> None:
    async with start_bot(clock=FakeDiscordClock(fake_discord.clock)) as bot:
        message, source = await edited(fake_discord, bot, alice, general)
        fake_discord.clock.advance(24 * 3600)  # Discord's link to the image the edit started from is dead
        form = await remixed(fake_discord, alice, message, source, "a street at dusk")
        answer = await private_answer(fake_discord, form)
        assert answer.content == SOURCE_EXPIRED
        assert form.ephemeral  # told at once: a remix reads nothing, so no public "thinking..." came first
        assert bot.store is not None
        assert await bot.store.children(source.id) == []
    assert [record.body["prompt"] for record in emulator.submits] == ["a street"]


async def test_an_edit_that_fails_unexpectedly_after_acknowledging_is_told_only_to_the_member(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    alice: FakeMember,
    general: FakeChannel,
) -> None:
    """The database refuses the image once it is in: the channel keeps nothing of it, the member reads one
    sentence, and the job written before the download ends unsent."""
    assert bot.store is not None
    await refuse_input_images(bot.store)
    interaction = await by_attachment(fake_discord, alice, general, "make it snow")
    answer = await private_answer(fake_discord, interaction)
    assert answer.content == SOMETHING_WENT_WRONG
    assert general.visible_messages() == []
    assert emulator.submits == []
    await nothing_started(bot, alice)


async def test_a_refusal_whose_thinking_cannot_be_deleted_is_said_in_the_reply(
    fake_discord: FakeDiscord, start_bot: BotStarter, alice: FakeMember, general: FakeChannel
) -> None:
    """Discord refusing to delete the "thinking..." must not leave the member on it: the reply says why."""
    fake_discord.inject_fault("DELETE /webhooks/{webhook_id}/{webhook_token}/messages/@original", 403)
    async with start_bot(image_max_pixels=1000):
        interaction = await by_attachment(fake_discord, alice, general, "make it snow")
        await interaction.wait_until_acked()
        reply = await fake_discord.wait_for(
            lambda: (m := interaction.original_message) is not None and "too many pixels" in m.content and m, 10
        )
    assert reply


async def test_a_restart_while_an_edits_image_downloads_answers_its_reply(
    fake_discord: FakeDiscord, start_bot: BotStarter, emulator: Emulator, alice: FakeMember, general: FakeChannel
) -> None:
    """The process goes while the member's image is still coming: the edit's job, written before the download,
    is found by the restart, which says in the reply that nothing was started (no "thinking..." left for good)."""
    with fake_discord.hold(f"GET {CDN_ROUTE}") as held:
        async with start_bot() as first:
            interaction = await alice.run_command("imagine", general, prompt="make it snow", image=("me.png", png()))
            await fake_discord.wait_for(lambda: held.waiting)
            await interaction.wait_until_acked()
            assert first.store is not None
            [waiting] = await first.store.jobs_for_user(alice.id)  # its reply's id is written once the image is in
            assert waiting.awaits_input
    async with start_bot() as again:
        reply = await reply_showing(fake_discord, interaction, "Failed")
        assert "restarted while it was reading your image" in str(reply.embeds)
        ended = await job_in_state(again, waiting.id, JobState.FAILED)
        assert ended.request_id is None
    assert emulator.submits == []


async def test_an_edit_the_database_cannot_end_is_still_told_only_to_the_member(
    fake_discord: FakeDiscord, bot: ImagineBot, emulator: Emulator, alice: FakeMember, general: FakeChannel
) -> None:
    """The database refuses the image and then the job's end as well (a full disk refuses both): the member still
    reads one private sentence, nothing public stays, and the job, waiting without its image, is never sent."""
    assert isinstance(bot.store, SQLiteJobStore)
    await refuse_input_images(bot.store)
    with contextlib.closing(sqlite3.connect(bot.store.path, isolation_level=None)) as db:
        db.execute(
            "CREATE TRIGGER refuse_endings BEFORE UPDATE OF state ON jobs WHEN NEW.state = 'failed'"
            " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
    interaction = await by_attachment(fake_discord, alice, general, "make it snow")
    answer = await private_answer(fake_discord, interaction)
    assert answer.content == SOMETHING_WENT_WRONG
    assert general.visible_messages() == []
    [job] = await bot.store.jobs_for_user(alice.id)
    assert (job.state, job.awaits_input) == (JobState.WAITING, True)
    assert emulator.submits == []


async def test_an_edit_whose_channel_goes_during_the_download_ends_and_sends_nothing(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    alice: FakeMember,
    guild: FakeGuild,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The job ends with its channel; the download, let go, finds it ended and has nobody left to tell: no error."""
    temporary = guild.add_channel("temporary")
    await fake_discord.sync_guild(guild)
    with fake_discord.hold(f"GET {CDN_ROUTE}") as held:
        interaction = await alice.run_command("imagine", temporary, prompt="make it snow", image=("me.png", png()))
        await fake_discord.wait_for(lambda: held.waiting)
        await interaction.wait_until_acked()
        assert bot.store is not None
        [job] = await bot.store.jobs_for_user(alice.id)
        await fake_discord.delete_channel(temporary)
        ended = await job_in_state(bot, job.id, JobState.CANCELLED, JobState.FAILED)
    assert ended.request_id is None
    await asyncio.sleep(0.2)  # the download, let go, finds its job ended
    assert emulator.submits == []
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR] == []


async def test_an_edit_refused_while_the_bot_stops_is_left_for_the_next_start_to_answer(
    fake_discord: FakeDiscord, start_bot: BotStarter, emulator: Emulator, alice: FakeMember, general: FakeChannel
) -> None:
    """A refusal found as the bot shuts down cannot be trusted to reach the member (Discord's session may be
    closing), so the job is not ended: the next start finds it without its image and says so in the reply."""
    async with start_bot(image_max_pixels=1000) as first:
        with fake_discord.hold(f"GET {CDN_ROUTE}") as held:
            interaction = await alice.run_command("imagine", general, prompt="make it snow", image=("me.png", png()))
            await fake_discord.wait_for(lambda: held.waiting)
            await interaction.wait_until_acked()
            assert first.jobs is not None
            await first.jobs.stop(grace=0.0)  # the first step of a shutdown
        assert first.store is not None
        await asyncio.sleep(0.2)  # the download, let go, is refused
        [job] = await first.store.jobs_for_user(alice.id)
        assert (job.state, job.awaits_input) == (JobState.WAITING, True)
        assert interaction.followups == []
    async with start_bot() as again:
        reply = await reply_showing(fake_discord, interaction, "Failed")
        assert "restarted while it was reading your image" in str(reply.embeds)
        await job_in_state(again, job.id, JobState.FAILED)
    assert emulator.submits == []


async def test_an_edit_refused_once_read_is_counted_as_not_started_not_as_failed(
    fake_discord: FakeDiscord, bot: ImagineBot, alice: FakeMember, general: FakeChannel
) -> None:
    """An operator alerting on failed jobs must not be paged because a member posted a broken picture."""
    interaction = await alice.run_command(
        "imagine", general, prompt="fix it", image=("fake.png", b"\x89PNG not really")
    )
    assert "isn't a picture I can read" in (await private_answer(fake_discord, interaction)).content
    assert bot.metrics is not None
    found = samples(generate_latest(bot.metrics.registry).decode())
    assert found[("imagine_jobs_finished_total", (("outcome", "not_started"),))] == 1
    assert found[("imagine_jobs_finished_total", (("outcome", "failed"),))] == 0
