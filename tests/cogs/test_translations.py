"""Every name and description the bot syncs has a German and a French version that Discord accepts."""

from typing import Any

import discord
import pytest
from discord import app_commands
from discord.ext import commands

from cogs.translations import FRENCH, GERMAN, CommandTranslator
from cogs.wiring import app_commands_to_sync
from tests.fakediscord.commands import valid_chat_input_name


async def payloads() -> list[dict[str, Any]]:
    bot = commands.Bot(command_prefix="!", intents=discord.Intents.none())
    for command in app_commands_to_sync():
        bot.tree.add_command(command)
    translator = CommandTranslator()
    await bot.tree.set_translator(translator)
    return [await command.get_translated_payload(bot.tree, translator) for command in bot.tree.get_commands()]


def walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    found = [node]
    for option in node.get("options") or []:
        found.extend(walk(option))
    return found


async def test_every_command_group_and_option_is_translated() -> None:
    for command in await payloads():
        if command.get("type") == 3:  # a message context menu: a name, no description (Discord's rule)
            assert set(command.get("name_localizations") or {}) == {"de", "fr"}, command["name"]
            continue
        for node in walk(command):
            descriptions = node.get("description_localizations") or {}
            assert set(descriptions) == {"de", "fr"}, node["name"]
            assert all(1 <= len(text) <= 100 for text in descriptions.values()), node["name"]
            if node.get("type", 1) in (1, 2) and node["name"] != "imagine":  # commands and groups
                names = node.get("name_localizations") or {}
                assert set(names) == {"de", "fr"}, node["name"]
                assert all(valid_chat_input_name(name) for name in names.values()), names
                assert all(name.startswith("imagine") for name in names.values()) or node is not command
            for choice in node.get("choices") or []:
                assert set(choice.get("name_localizations") or {}) == {"de", "fr"}, choice["name"]


async def test_option_names_stay_what_members_type() -> None:
    for command in await payloads():
        for node in walk(command)[1:]:
            if node.get("type") not in (1, 2):
                assert not node.get("name_localizations"), node["name"]


@pytest.mark.parametrize("table", [GERMAN, FRENCH], ids=["de", "fr"])
def test_tables_translate_the_same_strings(table: dict[str, str]) -> None:
    assert set(table) == set(GERMAN)


async def test_other_locales_stay_english() -> None:
    context: app_commands.TranslationContextTypes = app_commands.TranslationContext(
        app_commands.TranslationContextLocation.other, None
    )
    text = app_commands.locale_str("Create an image from a text prompt")
    assert await CommandTranslator().translate(text, discord.Locale.japanese, context) is None
