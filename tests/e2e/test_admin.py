"""`/imagine-admin` end to end: only for Manage Server, and every setting in force at once, without a restart.

The limit settings (member-jobs, daily-quota, server-jobs, admin-bypass) are
exercised where their effect is: tests/e2e/test_limits.py.
"""

from __future__ import annotations

import asyncio

import pytest

from bot.app import ImagineBot
from bot.emulator import Emulator
from cogs.moderation import BANNED_REFUSAL
from tests.e2e.conftest import reply_showing
from tests.e2e.test_community_support import admin, finished_image
from tests.fakediscord import FakeChannel, FakeDiscord, FakeGuild, FakeMember


async def test_members_without_manage_server_neither_see_nor_run_the_admin_commands(
    fake_discord: FakeDiscord, bot: ImagineBot, bob: FakeMember, general: FakeChannel, guild: FakeGuild
) -> None:
    command = fake_discord.commands.find("imagine-admin", guild.id)
    assert command is not None
    assert int(command["default_member_permissions"]) == 1 << 5  # MANAGE_GUILD: hidden from everyone else
    with pytest.raises(AssertionError, match="lacks the permissions"):
        await bob.run_command("imagine-admin show", general)

    # A server can grant the command to anyone in its Integrations settings: the bot checks again itself.
    command["default_member_permissions"] = None
    for name in ("show", "usage"):
        interaction = await bob.run_command(f"imagine-admin {name}", general)
        answer = await interaction.wait_for_message()
        assert answer.ephemeral
        assert "Manage Server" in answer.content
    interaction = await bob.run_command("imagine-admin set show-cost", general, enabled=True)
    assert "Manage Server" in (await interaction.wait_for_message()).content
    assert bot.store is not None
    assert not (await bot.store.guilds.get(guild.id)).show_cost


async def test_show_prints_the_defaults_then_each_change(
    fake_discord: FakeDiscord, bot: ImagineBot, moderator: FakeMember, general: FakeChannel
) -> None:
    shown = await admin(moderator, general, "show")
    fields = {field["name"]: field["value"] for field in shown.embeds[0]["fields"]}
    assert fields["Channels"] == "every channel"
    assert fields["Default aspect ratio"].startswith("1:1")
    assert fields["Jobs at once, per member"] == "3"
    assert fields["Jobs waiting, per member"] == "10"
    assert fields["Images per member per 24 h"] == "25"
    assert fields["Jobs at once, whole server"].startswith("10")
    assert fields["Manage Server skips member limits"] == "on"
    assert fields["🔄 reaction rerolls"] == "on"
    assert fields["Results show cost"] == "off"
    assert fields["Banned words and phrases (0)"] == "none"

    await admin(moderator, general, "set member-jobs", limit=2)
    await admin(moderator, general, "set member-queue", limit=5)
    await admin(moderator, general, "set server-jobs", limit=4)
    await admin(moderator, general, "set banned-words", action="add", words="Dragon, evil wizard")
    await admin(moderator, general, "set channels", action="add", channel=general)
    fields = {field["name"]: field["value"] for field in (await admin(moderator, general, "show")).embeds[0]["fields"]}
    assert fields["Jobs at once, per member"] == "2"
    assert fields["Jobs waiting, per member"] == "5"
    assert fields["Jobs at once, whole server"].startswith("4")
    assert fields["Banned words and phrases (2)"] == "||dragon||, ||evil wizard||"
    assert fields["Channels"] == f"<#{general.id}>"
    assert f"<@{moderator.id}>" in fields["Last change"]


async def test_allowed_channels_limit_where_images_are_made(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    alice: FakeMember,
    moderator: FakeMember,
    general: FakeChannel,
    guild: FakeGuild,
) -> None:
    art = guild.add_channel("art")
    await fake_discord.sync_guild(guild)
    await admin(moderator, general, "set channels", action="add", channel=art)

    refused = await alice.run_command("imagine", general, prompt="in the wrong room")
    answer = await refused.wait_for_message()
    assert answer.ephemeral
    assert f"<#{art.id}>" in answer.content
    assert emulator.submits == []
    await reply_showing(fake_discord, await alice.run_command("imagine", art, prompt="in the art room"), "Queued")

    await admin(moderator, general, "set channels", action="clear")
    await reply_showing(fake_discord, await alice.run_command("imagine", general, prompt="anywhere again"), "Queued")


async def test_default_aspect_ratio_applies_to_the_next_command(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    alice: FakeMember,
    moderator: FakeMember,
    general: FakeChannel,
) -> None:
    await admin(moderator, general, "set aspect-ratio", ratio="16:9")
    await reply_showing(fake_discord, await alice.run_command("imagine", general, prompt="wide by default"), "Queued")
    chosen = await alice.run_command("imagine", general, prompt="square on purpose", aspect_ratio="1:1")
    await reply_showing(fake_discord, chosen, "Queued")
    assert emulator.submits_for("wide by default", aspect_ratio="16:9") == 1
    assert emulator.submits_for("square on purpose", aspect_ratio="1:1") == 1


async def test_banned_words_are_caught_through_case_accents_full_width_and_zero_width_tricks(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    alice: FakeMember,
    moderator: FakeMember,
    general: FakeChannel,
) -> None:
    await admin(moderator, general, "set banned-words", action="add", words="dragon, evil wizard")
    sneaky = [
        "a DRAGON at dawn",
        "a drágön at dawn",  # accents
        "a ｄｒａｇｏｎ at dawn",  # full-width letters
        "a dr\u200bag\u200don at dawn",  # zero-width space and joiner
        "an Evil   WIZARD's tower",  # a phrase across extra spaces
    ]
    for prompt in sneaky:
        interaction = await alice.run_command("imagine", general, prompt=prompt)
        answer = await interaction.wait_for_message()
        assert answer.ephemeral, prompt
        assert answer.content == BANNED_REFUSAL, prompt
        assert "dawn" not in answer.content
        assert "tower" not in answer.content
    assert emulator.submits == []

    # Whole words only: a dragonfly is fine.
    await reply_showing(fake_discord, await alice.run_command("imagine", general, prompt="a dragonfly"), "Queued")
    await admin(moderator, general, "set banned-words", action="remove", words="Dragon")
    await reply_showing(fake_discord, await alice.run_command("imagine", general, prompt="a dragon again"), "Queued")


async def test_reaction_reroll_can_be_switched_off_and_on(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    alice: FakeMember,
    bob: FakeMember,
    moderator: FakeMember,
    general: FakeChannel,
) -> None:
    message, _ = await finished_image(fake_discord, bot, alice, general, "a lantern")
    await admin(moderator, general, "set reaction-reroll", enabled=False)
    await bob.react(message, "🔄")
    await asyncio.sleep(0.4)
    assert emulator.submits_for("a lantern") == 1

    await admin(moderator, general, "set reaction-reroll", enabled=True)
    await bob.unreact(message, "🔄")
    await bob.react(message, "🔄")
    await fake_discord.wait_for(lambda: emulator.submits_for("a lantern") == 2, 10)


async def test_show_cost_adds_the_cost_to_results(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    alice: FakeMember,
    moderator: FakeMember,
    general: FakeChannel,
) -> None:
    plain, _ = await finished_image(fake_discord, bot, alice, general, "no price tag")
    assert "Cost" not in {field["name"] for field in plain.embeds[0]["fields"]}
    await admin(moderator, general, "set show-cost", enabled=True)
    priced, job = await finished_image(fake_discord, bot, alice, general, "with a price tag")
    fields = {field["name"]: field["value"] for field in priced.embeds[0]["fields"]}
    assert fields["Cost"] == "$0.03"  # the emulator's price, as RunComfy reported it
    assert job.cost_usd == pytest.approx(0.03)
    assert not job.cost_estimated


async def test_command_names_and_descriptions_are_localised(
    fake_discord: FakeDiscord, bot: ImagineBot, guild: FakeGuild
) -> None:
    imagine = fake_discord.commands.find("imagine", guild.id)
    admin_group = fake_discord.commands.find("imagine-admin", guild.id)
    queue = fake_discord.commands.find("imagine-queue", guild.id)
    assert imagine is not None
    assert admin_group is not None
    assert queue is not None
    assert imagine["description_localizations"]["de"] == "Erstelle ein Bild aus einer Textbeschreibung"
    assert imagine["description_localizations"]["fr"].startswith("Crée une image")
    assert queue["name_localizations"] == {"de": "imagine-warteschlange", "fr": "imagine-file"}
    subcommands = {option["name"]: option for option in admin_group["options"]}
    assert subcommands["set"]["name_localizations"]["de"] == "festlegen"
    assert set(subcommands) == {"show", "set", "usage"}
