"""Members who ask for a lot at once: extra jobs wait their turn, and a burst of rerolls blocks nobody."""

from __future__ import annotations

import asyncio
import sys

from bot.app import ImagineBot
from bot.emulator import Duration, Emulator
from storage.models import JobState
from tests.e2e.conftest import jobs_for, reply_showing
from tests.e2e.test_community_support import admin
from tests.fakediscord import FakeChannel, FakeDiscord, FakeMember, FakeMessage

CREATE = "POST /channels/{channel_id}/messages"


async def test_four_quick_imagines_from_one_member_make_four_images_the_extra_one_waiting_its_turn(
    fake_discord: FakeDiscord, bot: ImagineBot, emulator: Emulator, alice: FakeMember, general: FakeChannel
) -> None:
    emulator.config.queue_time = Duration.constant(0.1)
    emulator.config.run_time = Duration.constant(1.0)
    interactions = [await alice.run_command("imagine", general, prompt=f"quick {index}") for index in range(4)]
    fourth = await reply_showing(fake_discord, interactions[3], "Waiting for one of your images to finish · #1")
    assert emulator.submits_for("quick 3") == 0  # it waits in the bot, nothing sent or billed
    for interaction in interactions:
        await reply_showing(fake_discord, interaction, "Done", within=20)
    assert len(emulator.submits) == 4
    shown = [version.content for version in fourth.versions]
    assert any("#1 in line" in text for text in shown)
    assert "Done" in shown[-1]
    await jobs_for(bot, interactions, JobState.DELIVERED)


async def test_six_rerolls_at_once_in_one_channel_do_not_hold_up_an_imagine(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    alice: FakeMember,
    bob: FakeMember,
    moderator: FakeMember,
    general: FakeChannel,
) -> None:
    """Each reroll posts a new message; here Discord sits on those posts (discord.py sends the first and holds the
    rest of that route until it is answered). The server's lock is held only for database work, so an `/imagine`
    in the same server is acknowledged while all six rerolls are still unposted."""
    await admin(moderator, general, "set server-jobs", limit=20)
    original = await reply_showing(fake_discord, await alice.run_command("imagine", general, prompt="a kite"), "Done")
    job_id = original.embeds[0]["footer"]["text"].removeprefix("Job ")
    assert general.guild is not None
    members = [alice, bob, moderator, *(general.guild.add_member(f"fan{index}") for index in range(3))]
    with fake_discord.hold(CREATE) as held:
        clicks = [await member.click(original, f"imagine:reroll:{job_id}") for member in members]
        for click in clicks:
            await click.wait_until_acked()
        await fake_discord.wait_for(lambda: held.waiting >= 1, 10)  # the posts hang in Discord
        assert bot.store is not None
        async with asyncio.timeout(10):  # each reroll's job is written (its place taken) before it posts
            while True:
                if len(await bot.store.children(int(job_id))) == 6:
                    break
                await asyncio.sleep(0.02)
        command = await bob.run_command("imagine", general, prompt="not held up")
        await command.wait_until_acked()
        assert command.acked
        assert not held.released.is_set()
        assert all(job.origin.message_id is None for job in await bot.store.children(int(job_id)))  # none posted
        took = (command.acked_at or 0.0) - command.created_at
        sys.stdout.write(f"\n/imagine acknowledged {took * 1000:.0f} ms after it was sent, six rerolls pending\n")
    await reply_showing(fake_discord, command, "Done", within=20)

    def rerolls() -> list[FakeMessage]:
        return [m for m in general.messages if m.referenced is original and "Done" in m.content]

    await fake_discord.wait_for(lambda: len(rerolls()) == 6, 30)
    assert not fake_discord.failed_interactions
    await asyncio.sleep(0)
