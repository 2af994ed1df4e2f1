"""`/imagine-queue` and `/imagine-history`: a member's own view of their jobs, always ephemeral.

They are siblings of `/imagine` rather than subcommands (Discord does not
allow options and subcommands on one command), named so they sort next to it
in the command picker.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from cogs import reports

if TYPE_CHECKING:
    from cogs.imagine import ImagineCog

log = logging.getLogger(__name__)

HISTORY_SIZE = 10


class HistoryCog(commands.Cog, name="History"):
    def __init__(self, imagine: ImagineCog) -> None:
        self.imagine = imagine
        self.store = imagine.store

    @app_commands.command(name="imagine-queue", description="Your images in progress here, and the server's queue")
    @app_commands.guild_only()
    async def queue(self, interaction: discord.Interaction[Any]) -> None:
        guild_id = interaction.guild_id or 0
        settings = await self.store.guilds.get(guild_id)
        load = await self.imagine.admission.load(settings, interaction.user.id)
        embed = reports.queue(
            settings,
            mine=list(load.mine),
            positions=load.positions,
            running=load.running,
            waiting=load.waiting,
            quota_used=load.quota_used,
            quota_frees_at=load.quota_frees_at,
            unlimited=settings.admins_bypass and interaction.permissions.manage_guild,
        )
        await interaction.response.send_message(embed=embed, ephemeral=True)

    @app_commands.command(name="imagine-history", description="Your last 10 images here, with links and seeds")
    @app_commands.guild_only()
    async def history(self, interaction: discord.Interaction[Any]) -> None:
        results = await self.store.results_for_user(interaction.user.id, interaction.guild_id or 0, limit=HISTORY_SIZE)
        await interaction.response.send_message(embed=reports.history(list(results)), ephemeral=True)

    async def cog_app_command_error(
        self, interaction: discord.Interaction[Any], error: app_commands.AppCommandError
    ) -> None:
        await answer_failure(interaction, error)


async def answer_failure(interaction: discord.Interaction[Any], error: app_commands.AppCommandError) -> None:
    """One sentence instead of "This interaction failed"; the traceback goes to the log."""
    log.error("/%s failed", interaction.command.qualified_name if interaction.command else "?", exc_info=error)
    text = "Something went wrong on my side. Please try again in a moment."
    try:
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)
    except discord.HTTPException:
        log.warning("could not tell the member about the failure")
