"""`/imagine-queue` and `/imagine-history` end to end: a member's own view, ephemeral, with the numbers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bot.app import ImagineBot
from bot.emulator import Duration, Emulator
from storage.models import JobOrigin, JobState, NewJob
from tests.e2e.conftest import reply_showing
from tests.e2e.test_community_support import admin, finished_image
from tests.fakediscord import FakeChannel, FakeDiscord, FakeGuild, FakeMember


def fields_of(embed: dict[str, Any]) -> dict[str, str]:  # an embed as Discord's JSON
    return {str(field["name"]): str(field["value"]) for field in embed["fields"]}


async def test_queue_shows_my_jobs_with_state_and_place_and_the_server_totals(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    alice: FakeMember,
    bob: FakeMember,
    moderator: FakeMember,
    general: FakeChannel,
) -> None:
    emulator.config.queue_time = Duration.constant(30.0)
    emulator.config.queue_position_start = 4
    await admin(moderator, general, "set server-jobs", limit=1)
    await reply_showing(fake_discord, await bob.run_command("imagine", general, prompt="bob holds the slot"), "#4")
    for prompt in ("alice first", "alice second"):
        await reply_showing(fake_discord, await alice.run_command("imagine", general, prompt=prompt), "Waiting")

    answer = await (await alice.run_command("imagine-queue", general)).wait_for_message()
    assert answer.ephemeral
    [embed] = answer.embeds
    lines = embed["description"].splitlines()
    assert len(lines) == 2
    assert "waiting for a free slot · #1" in lines[0]
    assert "alice first" in lines[0]
    assert "waiting for a free slot · #2" in lines[1]
    assert "alice second" in lines[1]
    assert "/channels/" in lines[0]  # a link to the reply
    fields = fields_of(embed)
    assert fields["This server"] == "1 of 1 slots in use · 2 waiting for a slot"
    assert fields["You, last 24 hours"].startswith("2 of 25 images")

    bobs = await (await bob.run_command("imagine-queue", general)).wait_for_message()
    assert "queued at the image service · #4" in bobs.embeds[0]["description"]
    assert "alice" not in bobs.embeds[0]["description"]


async def test_queue_when_idle_says_so(
    fake_discord: FakeDiscord, bot: ImagineBot, alice: FakeMember, general: FakeChannel
) -> None:
    answer = await (await alice.run_command("imagine-queue", general)).wait_for_message()
    assert answer.ephemeral
    assert "Nothing in progress" in answer.embeds[0]["description"]
    assert fields_of(answer.embeds[0])["This server"].startswith("0 of 10 slots")


async def test_history_lists_my_last_ten_results_with_links_and_seeds(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    alice: FakeMember,
    bob: FakeMember,
    general: FakeChannel,
    guild: FakeGuild,
) -> None:
    message, job = await finished_image(fake_discord, bot, alice, general, "a real one", seed=4242)
    await finished_image(fake_discord, bot, bob, general, "bob's own")
    store = bot.store
    assert store is not None
    start = datetime.now(UTC) - timedelta(hours=3)
    for index in range(11):  # older results, written as the bot would have
        at = start + timedelta(minutes=index)
        origin = JobOrigin(guild_id=guild.id, channel_id=general.id, user_id=alice.id, message_id=10_000 + index)
        old = await store.create(NewJob("m", f"older {index}", "1:1", index, origin), now=at)
        await store.transition(old.id, JobState.DELIVERED, expect=tuple(JobState), now=at + timedelta(seconds=5))

    answer = await (await alice.run_command("imagine-history", general)).wait_for_message()
    assert answer.ephemeral
    [embed] = answer.embeds
    assert embed["title"] == "Your last 10 images here"
    lines = embed["description"].splitlines()
    assert len(lines) == 10
    assert lines[0].startswith("seed `4242` · 1:1 · square · ImagineArt 1.5 · a real one")
    assert f"/channels/{guild.id}/{general.id}/{message.id}" in lines[0]
    assert "older 10" in lines[1]
    assert "older 2" in lines[-1]
    assert "bob" not in embed["description"]
    assert job.id  # the real one is delivered
