"""Cost end to end: RunComfy's figure stored, the base price standing in (marked) when it is missing, and
`/imagine-admin usage` adding it all up per day and per member."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.app import ImagineBot
from bot.emulator import Duration, Emulator, Fault
from storage.models import JobOrigin, JobState, NewJob
from tests.e2e.conftest import BotStarter, job_in_state, reply_showing
from tests.e2e.test_community_support import admin, job_for
from tests.fakediscord import FakeChannel, FakeDiscord, FakeGuild, FakeMember


async def test_a_result_without_a_cost_gets_the_base_price_marked_as_an_estimate(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    alice: FakeMember,
    moderator: FakeMember,
    general: FakeChannel,
) -> None:
    await admin(moderator, general, "set show-cost", enabled=True)
    emulator.config.queue_time = Duration.constant(1.0)
    emulator.config.run_time = Duration.constant(0.0)
    emulator.config.base_price_usd = 0.05
    interaction = await alice.run_command("imagine", general, prompt="priceless")
    job = await job_for(bot, interaction)
    job = await job_in_state(bot, job.id, JobState.IN_QUEUE)
    assert job.request_id is not None
    # The result RunComfy sends for this job carries no cost at all.
    body = {
        "request_id": job.request_id,
        "status": "succeeded",
        "output": {"images": [emulator.file_url(job.request_id)]},
    }
    emulator.inject("result", Fault.http(200, body))

    message = await reply_showing(fake_discord, interaction, "Done")
    fields = {field["name"]: field["value"] for field in message.embeds[0]["fields"]}
    assert fields["Cost"] == "≈ $0.05"
    job = await job_in_state(bot, job.id, JobState.DELIVERED)
    assert job.cost_usd == pytest.approx(0.05)
    assert job.cost_estimated


async def test_usage_adds_up_spend_and_images_per_day_and_names_the_top_members(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    alice: FakeMember,
    bob: FakeMember,
    moderator: FakeMember,
    general: FakeChannel,
    guild: FakeGuild,
) -> None:
    store = bot.store
    assert store is not None
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    if today > datetime.now(UTC):
        today -= timedelta(days=1)

    async def finished(
        user: FakeMember, days_ago: int, cost: float | None, *, estimated: bool = False, guild_id: int = guild.id
    ) -> None:
        at = today - timedelta(days=days_ago)
        origin = JobOrigin(guild_id=guild_id, channel_id=general.id, user_id=user.id)
        job = await store.create(NewJob("m", "p", "1:1", 1, origin), now=at)
        await store.transition(
            job.id, JobState.COMPLETED, expect=tuple(JobState), now=at, cost_usd=cost, cost_estimated=estimated
        )
        await store.transition(job.id, JobState.DELIVERED, expect=tuple(JobState), now=at)

    await finished(alice, 0, 0.03)
    await finished(alice, 0, 0.03)
    await finished(bob, 0, 0.03, estimated=True)
    await finished(alice, 2, 0.10)
    await finished(bob, 2, None)  # no cost at all: priced at the model's base price, as an estimate
    await finished(bob, 10, 5.00)  # outside the 7 days
    await finished(bob, 0, 7.00, guild_id=guild.id + 1)  # another server
    never = await store.create(
        NewJob("m", "failed early", "1:1", 1, JobOrigin(guild_id=guild.id, user_id=bob.id)), now=today
    )
    await store.transition(never.id, JobState.FAILED, expect=tuple(JobState), now=today)  # no image: not counted

    answer = await admin(moderator, general, "usage", days=7)
    [embed] = answer.embeds
    assert embed["title"] == "Usage · last 7 days"
    day = today.date()
    assert embed["description"].splitlines() == [
        f"`{day - timedelta(days=2)}` · 2 images · ≈ $0.13",
        f"`{day}` · 3 images · ≈ $0.09",
    ]
    fields = {field["name"]: field["value"] for field in embed["fields"]}
    assert fields["Total"] == "5 images · ≈ $0.22"
    assert fields["Top members"].splitlines() == [
        f"1. <@{alice.id}> · 3 images · $0.16",
        f"2. <@{bob.id}> · 2 images · ≈ $0.06",
    ]
    assert "estimates" in embed["footer"]["text"]

    one_day = await admin(moderator, general, "usage", days=1)
    assert fields_total(one_day.embeds[0]) == "3 images · ≈ $0.09"


def fields_total(embed: dict[str, Any]) -> str:  # an embed as Discord's JSON
    return next(str(f["value"]) for f in embed["fields"] if f["name"] == "Total")


NANO = "google/nano-banana-2/text-to-image"


async def test_a_gallery_is_priced_at_its_own_models_price_times_its_images(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    alice: FakeMember,
    moderator: FakeMember,
    general: FakeChannel,
) -> None:
    await admin(moderator, general, "set show-cost", enabled=True)
    emulator.config.queue_time = Duration.constant(1.0)
    emulator.config.run_time = Duration.constant(0.0)
    interaction = await alice.run_command("imagine", general, prompt="four pears", model=NANO, count=4)
    job = await job_for(bot, interaction)
    # Written with the job: Nano Banana 2's $0.07 (docs/models.md) times 4, not the default model's $0.03.
    assert job.cost_usd == pytest.approx(0.28)
    assert job.cost_estimated
    job = await job_in_state(bot, job.id, JobState.IN_QUEUE)
    assert job.request_id is not None
    # The result brings no cost, and RunComfy's model info gives Nano Banana 2 a base price of its own.
    urls = [emulator.file_url(job.request_id, number) for number in range(1, 5)]
    emulator.inject(
        "result", Fault.http(200, {"request_id": job.request_id, "status": "succeeded", "output": {"images": urls}})
    )
    emulator.inject("model", Fault.http(200, {"model_id": NANO, "base_price_usd": 0.08}))

    message = await reply_showing(fake_discord, interaction, "Done")
    assert len(message.attachments) == 4
    fields = {field["name"]: field["value"] for field in message.embeds[0]["fields"]}
    assert fields["Cost"] == "≈ $0.32"  # that base price times the 4 images
    assert emulator.calls["model"] == 1  # asked for this job's model, once
    job = await job_in_state(bot, job.id, JobState.DELIVERED)
    assert job.cost_usd == pytest.approx(0.32)
    assert job.cost_estimated

    usage = await admin(moderator, general, "usage", days=1)
    [embed] = usage.embeds
    assert fields_total(embed) == "4 images · ≈ $0.32"
    assert embed["fields"][1]["value"] == f"1. <@{alice.id}> · 4 images · ≈ $0.32"


async def test_the_operators_daily_dollars_refuse_a_gallery_that_would_pass_them_while_one_image_fits(
    fake_discord: FakeDiscord,
    start_bot: BotStarter,
    emulator: Emulator,
    alice: FakeMember,
    moderator: FakeMember,
    general: FakeChannel,
) -> None:
    async with start_bot(budget_usd_per_day=0.30) as bot:
        await reply_showing(fake_discord, await alice.run_command("imagine", general, prompt="a plum"), "Done")
        # $0.03 spent; Nano Banana 2 × 4 = $0.28 would make $0.31.
        over = await alice.run_command("imagine", general, prompt="four plums", model=NANO, count=4)
        refusal = await over.wait_for_message()
        assert refusal.ephemeral
        assert "about $0.28" in refusal.content
        assert "$0.27 left of its operator's daily budget ($0.30)" in refusal.content
        assert "fewer images or a cheaper model" in refusal.content
        assert "<t:" in refusal.content  # when it resets
        one = await alice.run_command("imagine", general, prompt="one plum", model=NANO)
        await reply_showing(fake_discord, one, "Done")  # $0.07 more: $0.10 of $0.30
        usage = await admin(moderator, general, "usage", days=1)
        assert "today: ≈ $0.10 of $0.30" in str(usage.embeds)
        assert bot.store is not None
        assert [job.prompt for job in await bot.store.jobs_for_user(alice.id)] == ["one plum", "a plum"]
    assert emulator.submits_for("four plums") == 0
    assert [record.body.get("num_images") for record in emulator.submits] == [None, None]


async def test_the_operators_daily_images_refuse_a_gallery_that_would_pass_them_while_fewer_fit(
    fake_discord: FakeDiscord, start_bot: BotStarter, emulator: Emulator, alice: FakeMember, general: FakeChannel
) -> None:
    async with start_bot(budget_images_per_day=3) as bot:
        await reply_showing(fake_discord, await alice.run_command("imagine", general, prompt="a fig"), "Done")
        over = await alice.run_command("imagine", general, prompt="four figs", model=NANO, count=4)
        refusal = await over.wait_for_message()
        assert refusal.ephemeral
        assert "asked for 4 images" in refusal.content
        assert "only 2 more today" in refusal.content
        two = await alice.run_command("imagine", general, prompt="two figs", model=NANO, count=2)
        await reply_showing(fake_discord, two, "Done")
        assert bot.store is not None
    assert emulator.submits_for("four figs") == 0
    assert emulator.submits_for("two figs") == 1
