"""Safe to run as a public bot: the operator's money and servers, against what strangers (and their bots) do."""

from __future__ import annotations

import asyncio

from bot.app import ImagineBot
from bot.emulator import Emulator
from bot.shutdown import drain_handlers
from storage.models import JobState
from tests.e2e.conftest import BotStarter, job_in_state, reply_showing
from tests.e2e.test_community_support import admin
from tests.fakediscord import FakeChannel, FakeDiscord, FakeGuild, FakeMember, FakeMessage

CALLBACK = "POST /interactions/{interaction_id}/{interaction_token}/callback"


async def test_a_server_owner_cannot_make_more_than_the_operators_budget_whatever_they_set(
    fake_discord: FakeDiscord, start_bot: BotStarter, emulator: Emulator, moderator: FakeMember, general: FakeChannel
) -> None:
    async with start_bot(budget_images_per_day=3) as bot:
        # Manage Server: skips the member limits by default, and raises the server's as far as they go.
        await admin(moderator, general, "set server-jobs", limit=100)
        await admin(moderator, general, "set daily-quota", limit=1000)
        await admin(moderator, general, "set member-jobs", limit=20)
        made = [
            await reply_showing(
                fake_discord, await moderator.run_command("imagine", general, prompt=f"mine {i}"), "Done"
            )
            for i in range(3)
        ]
        over = await moderator.run_command("imagine", general, prompt="one more")
        refusal = await over.wait_for_message()
        assert refusal.ephemeral
        assert "its operator allows per day" in refusal.content
        assert "<t:" in refusal.content  # when it resets
        job_id = made[0].embeds[0]["footer"]["text"].removeprefix("Job ")
        click = await moderator.click(made[0], f"imagine:reroll:{job_id}")  # rerolls count too
        await click.wait_until_acked()
        await fake_discord.wait_for(lambda: click.followups and "operator" in click.followups[-1].content, 10)
        usage = await admin(moderator, general, "usage")
        assert "today: 3 of 3 images" in str(usage.embeds)
        assert bot.store is not None
    assert emulator.submits_for("one more") == 0
    assert len(emulator.submits) == 3


async def test_a_server_off_the_allow_list_is_left_and_its_commands_start_nothing(
    fake_discord: FakeDiscord,
    start_bot: BotStarter,
    emulator: Emulator,
    guild: FakeGuild,
    alice: FakeMember,
    general: FakeChannel,
) -> None:
    allowed = fake_discord.add_guild("Allowed Server")
    # The first leave fails (as it may on Discord): meanwhile every command there gets a polite answer.
    fake_discord.inject_fault("DELETE /users/@me/guilds/{guild_id}", 403, times=1)
    async with start_bot(discord_allowed_guild_ids=[allowed.id]):
        interaction = await alice.run_command("imagine", general, prompt="not here")
        answer = await interaction.wait_for_message()
        assert answer.ephemeral
        assert "not set up for this server" in answer.content
        await asyncio.sleep(0.2)
    assert emulator.submits == []
    # Next start, the bot leaves the server it may not serve.
    async with start_bot(discord_allowed_guild_ids=[allowed.id]):
        await fake_discord.wait_for(lambda: guild in fake_discord.left_guilds, 10)
    assert allowed not in fake_discord.left_guilds


async def test_out_of_credit_jobs_wait_admins_are_told_once_and_everything_resumes_by_itself(
    fake_discord: FakeDiscord,
    start_bot: BotStarter,
    emulator: Emulator,
    guild: FakeGuild,
    alice: FakeMember,
    bob: FakeMember,
    general: FakeChannel,
) -> None:
    emulator.config.fault_routes = frozenset({"submit"})
    emulator.config.error_code = 400002  # RunComfy: the balance is exhausted
    emulator.config.error_code_rate = 1.0
    async with start_bot(runcomfy_balance_probe_seconds=0.3) as bot:
        first = await alice.run_command("imagine", general, prompt="waits for credit")
        second = await bob.run_command("imagine", general, prompt="also waits")
        await reply_showing(fake_discord, first, "out of credit")
        await reply_showing(fake_discord, second, "out of credit")
        owner = fake_discord.dm_channel(fake_discord.owner)
        await fake_discord.wait_for(lambda: owner.messages, 10)
        await asyncio.sleep(1.0)  # several probes meanwhile, all refused
        assert len(owner.messages) == 1  # told once, not per job or per probe
        assert "top up" in owner.messages[0].content
        assert emulator.submits == []  # refused submits create nothing
        emulator.config.error_code_rate = 0.0  # the operator topped up
        await reply_showing(fake_discord, first, "Done", within=15)
        await reply_showing(fake_discord, second, "Done", within=15)
        assert bot.store is not None
    assert len(emulator.submits) == 2
    assert len(owner.messages) == 1


async def test_another_bots_reroll_reaction_starts_nothing(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    guild: FakeGuild,
    alice: FakeMember,
    general: FakeChannel,
) -> None:
    robot = guild.add_member("robot", bot=True)
    original = await reply_showing(fake_discord, await alice.run_command("imagine", general, prompt="a bell"), "Done")
    await robot.react(original, "🔄")
    await robot.react(original, "✉")
    await asyncio.sleep(0.5)
    assert emulator.submits_for("a bell") == 1
    assert not [m for m in general.messages if m.referenced is original]


async def test_a_failed_acknowledgement_holds_no_place(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    alice: FakeMember,
    moderator: FakeMember,
    general: FakeChannel,
) -> None:
    await admin(moderator, general, "set member-jobs", limit=1)
    await admin(moderator, general, "set member-queue", limit=1)
    fake_discord.inject_fault(CALLBACK, 0, times=1)  # the acknowledgement's connection is cut
    lost = await alice.run_command("imagine", general, prompt="never acknowledged")
    await asyncio.sleep(0.3)
    assert bot.store is not None
    [job] = await bot.store.jobs_for_user(alice.id)
    job = await job_in_state(bot, job.id, JobState.FAILED)
    assert job.deliver_at is None  # nowhere to tell anyone
    assert lost.original_message is None or isinstance(lost.original_message, FakeMessage)
    for index in range(2):  # the abandoned job holds neither a slot nor a place in line
        await reply_showing(fake_discord, await alice.run_command("imagine", general, prompt=f"next {index}"), "Done")
    assert emulator.submits_for("never acknowledged") == 0


async def test_details_by_dm_are_limited_per_member(
    fake_discord: FakeDiscord, bot: ImagineBot, emulator: Emulator, alice: FakeMember, general: FakeChannel
) -> None:
    images = []
    for index in range(6):
        interaction = await alice.run_command("imagine", general, prompt=f"a card {index}")
        images.append(await reply_showing(fake_discord, interaction, "Done"))
    dms = fake_discord.dm_channel(alice.user)
    for image in images:
        await alice.react(image, "✉️")
    await fake_discord.wait_for(lambda: len(dms.messages) >= 5, 10)
    assert await drain_handlers(10) == 0  # every reaction handled (Discord paces DMs: the last take a moment)
    assert len(dms.messages) == 5  # a few per ten minutes, then no more DMs for now
