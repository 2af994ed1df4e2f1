"""The operator's budget as the operator sees it, the member limits for everything a member can start (rerolls and
remixes as much as `/imagine`), and the allow-list for servers the bot joins while it runs and for every kind of
interaction there."""

from __future__ import annotations

import logging

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.app import ImagineBot
from bot.emulator import Duration, Emulator
from tests.e2e.conftest import BotStarter, reply_showing
from tests.e2e.test_community_support import admin, finished_image, run
from tests.fakediscord import FakeChannel, FakeDiscord, FakeGuild, FakeInteraction, FakeMember, FakeMessage

OPERATOR_REFUSAL = "its operator allows per day"


async def metrics(bot: ImagineBot) -> dict[tuple[str, str], float]:
    """/metrics as {(sample name, window label): value} for the budget gauges."""
    assert bot.health is not None
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{bot.health.port}/metrics") as response,
    ):
        text = await response.text()
    return {
        (sample.name, sample.labels.get("window", "")): sample.value
        for family in text_string_to_metric_families(text)
        if family.name.startswith("imagine_budget")
        for sample in family.samples
    }


async def refused_click(fake: FakeDiscord, click: FakeInteraction, text: str) -> FakeMessage:
    """The ephemeral follow-up of a deferred click, once it says `text`."""
    await click.wait_until_acked()
    await fake.wait_for(lambda: click.followups and text in click.followups[-1].content, 10)
    answer = click.followups[-1]
    assert answer.ephemeral
    return answer


async def remix(member: FakeMember, message: FakeMessage, job_id: int) -> FakeMessage:
    """Open the image's Remix form and send it as it comes (prefilled): the answer to the submission."""
    click = await member.click(message, f"imagine:remix:{job_id}")
    await click.wait_until_acked()
    submitted = await member.submit_modal(click, {})
    return await submitted.wait_for_message()


async def test_the_operator_sees_the_budget_reached_in_the_log_once_and_in_metrics(
    fake_discord: FakeDiscord,
    start_bot: BotStarter,
    emulator: Emulator,
    alice: FakeMember,
    bob: FakeMember,
    general: FakeChannel,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="bot")
    async with start_bot(budget_images_per_day=1, budget_usd_per_day=5.0, health_port=0) as bot:
        await reply_showing(fake_discord, await alice.run_command("imagine", general, prompt="the only one"), "Done")
        assert not [r for r in caplog.records if "budget is reached" in r.getMessage()]
        for member, prompt in ((bob, "over the budget"), (alice, "over it again")):
            refusal = await (await member.run_command("imagine", general, prompt=prompt)).wait_for_message()
            assert OPERATOR_REFUSAL in refusal.content
        warnings = [r for r in caplog.records if "budget is reached" in r.getMessage()]
        assert len(warnings) == 1  # once per window, not once per refusal
        [warning] = warnings
        assert warning.levelno == logging.WARNING
        assert "bot_images: 1 of 1" in warning.getMessage()
        seen = await metrics(bot)
    assert seen[("imagine_budget_used", "images_today")] == 1
    assert seen[("imagine_budget_limit", "images_today")] == 1
    assert seen[("imagine_budget_limit", "usd_today")] == 5.0
    assert seen[("imagine_budget_used", "usd_today")] == pytest.approx(emulator.config.base_price_usd)
    assert seen[("imagine_budget_limit", "usd_month")] == 100.0  # the default cap
    assert len(emulator.submits) == 1


async def test_rerolls_and_remixes_count_against_the_members_daily_quota(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    alice: FakeMember,
    moderator: FakeMember,
    general: FakeChannel,
) -> None:
    await admin(moderator, general, "set daily-quota", limit=3)
    first, first_job = await finished_image(fake_discord, bot, alice, general, "a lighthouse")
    second, _ = await finished_image(fake_discord, bot, alice, general, "a harbour")
    click = await alice.click(first, f"imagine:reroll:{first_job.id}")  # the third image of the day: a reroll
    await click.wait_until_acked()
    assert bot.store is not None
    await fake_discord.wait_for(lambda: emulator.submits_for("a lighthouse") == 2, 10)
    quota = "3 of your 3 images for the last 24 hours"

    await alice.react(second, "🔄")  # a reaction has no ephemeral reply: the refusal comes by DM
    dms = fake_discord.dm_channel(alice.user)
    await fake_discord.wait_for(lambda: dms.messages and quota in dms.messages[-1].content, 10)
    form = await remix(alice, first, first_job.id)
    assert form.ephemeral
    assert quota in form.content
    assert "<t:" in form.content  # when room frees up

    assert emulator.submits_for("a lighthouse") == 2  # the /imagine and the one reroll
    assert emulator.submits_for("a harbour") == 1
    assert len(emulator.submits) == 3
    assert len(await bot.store.children(first_job.id)) == 1  # the refused remix wrote nothing
    assert not [m for m in general.messages if m.referenced is second]


async def test_rerolls_and_remixes_wait_behind_a_members_running_jobs_and_are_refused_past_the_line_cap(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    alice: FakeMember,
    moderator: FakeMember,
    general: FakeChannel,
) -> None:
    original, job = await finished_image(fake_discord, bot, alice, general, "a windmill")
    await admin(moderator, general, "set member-jobs", limit=1)
    await admin(moderator, general, "set member-queue", limit=1)
    emulator.config.queue_time = Duration.constant(30.0)
    await reply_showing(fake_discord, await alice.run_command("imagine", general, prompt="runs"), "Queued")
    waits = await alice.run_command("imagine", general, prompt="waits")
    await reply_showing(fake_discord, waits, "Waiting for one of your images to finish · #1")
    line_full = "and it holds up to 1 of yours"

    await refused_click(fake_discord, await alice.click(original, f"imagine:reroll:{job.id}"), line_full)
    form = await remix(alice, original, job.id)
    assert form.ephemeral
    assert line_full in form.content
    assert emulator.submits_for("a windmill") == 1
    assert not [m for m in general.messages if m.referenced is original]


async def test_a_remix_is_refused_by_the_operators_budget_even_for_a_server_admin(
    fake_discord: FakeDiscord, start_bot: BotStarter, emulator: Emulator, moderator: FakeMember, general: FakeChannel
) -> None:
    async with start_bot(budget_images_per_day=1) as bot:
        original, job = await finished_image(fake_discord, bot, moderator, general, "a comet")  # skips member limits
        form = await remix(moderator, original, job.id)
        assert form.ephemeral
        assert OPERATOR_REFUSAL in form.content
        assert "<t:" in form.content  # when it resets
    assert emulator.submits_for("a comet") == 1
    assert len(emulator.submits) == 1


async def test_a_server_off_the_allow_list_that_adds_the_bot_while_it_runs_is_left_at_once(
    fake_discord: FakeDiscord, start_bot: BotStarter, guild: FakeGuild
) -> None:
    async with start_bot(discord_allowed_guild_ids=[guild.id]):
        stranger = fake_discord.add_guild("Stranger Server")
        stranger.add_channel("lobby")
        await fake_discord.invite_bot(stranger)  # someone adds the bot to their server
        await fake_discord.wait_for(lambda: stranger in fake_discord.left_guilds, 10)
    assert guild not in fake_discord.left_guilds


async def test_every_interaction_in_a_server_off_the_allow_list_gets_the_polite_answer(
    fake_discord: FakeDiscord,
    start_bot: BotStarter,
    emulator: Emulator,
    guild: FakeGuild,
    alice: FakeMember,
    moderator: FakeMember,
    general: FakeChannel,
) -> None:
    async with start_bot() as before:  # made while the server was still served
        original, job = await finished_image(fake_discord, before, alice, general, "an old picture")
    allowed = fake_discord.add_guild("Allowed Server")
    fake_discord.inject_fault("DELETE /users/@me/guilds/{guild_id}", 403, times=1)  # leaving fails this time
    async with start_bot(discord_allowed_guild_ids=[allowed.id]):
        history = await (await run(alice, general, "imagine-history", {})).wait_for_message()
        show = await admin(moderator, general, "show")
        click = await alice.click(original, f"imagine:reroll:{job.id}")
        reroll = await click.wait_for_message()
        for answer in (history, show, reroll):
            assert answer.ephemeral
            assert "not set up for this server" in answer.content
    assert emulator.submits_for("an old picture") == 1
    assert not [m for m in general.messages if m.referenced is original]
