"""The cogs built on `/imagine` for community servers, and the translator, in one place for `bot/app.py`.

`setup_hook` calls `add_community_cogs` right after adding the Imagine cog
(and before any sync, so the translator's localisations go out with it);
`python -m bot sync` registers `app_commands_to_sync()` with the same
translator, so both paths publish the same commands.
"""

from __future__ import annotations

from discord import app_commands
from discord.ext import commands

from cogs.admin import AdminCog
from cogs.history import HistoryCog
from cogs.imagine import ImagineCog
from cogs.results import ResultsCog
from cogs.translations import CommandTranslator

AppCommand = app_commands.Command[commands.Cog, ..., None] | app_commands.Group


async def add_community_cogs(bot: commands.Bot, imagine: ImagineCog) -> None:
    """Results (remix, delete, ✉️), the member commands and `/imagine-admin`, all sharing the Imagine cog's
    store, job manager and waiting line."""
    await bot.tree.set_translator(CommandTranslator())
    await bot.add_cog(ResultsCog(bot, imagine))
    await bot.add_cog(HistoryCog(imagine))
    await bot.add_cog(AdminCog(imagine))


def app_commands_to_sync() -> list[AppCommand]:
    """Every slash command the bot answers, for a sync from outside the running bot."""
    commands_: list[AppCommand] = []
    for cog in (ImagineCog, HistoryCog, AdminCog):
        commands_.extend(cog.__cog_app_commands__)
    return commands_


def translator() -> app_commands.Translator:
    return CommandTranslator()
