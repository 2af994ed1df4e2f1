"""`/imagine-queue` and `/imagine-history`: a member's own view of their jobs, always ephemeral.

They are siblings of `/imagine` rather than subcommands (Discord does not
allow options and subcommands on one command), named so they sort next to it
in the command picker.
"""

from __future__ import annotations

import logging
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.jobs import JobManager
from cogs import reports
from storage.base import JobStore

log = logging.getLogger(__name__)

HISTORY_SIZE = 10


class HistoryCog(commands.Cog, name="History"):
    def __init__(self, jobs: JobManager, store: JobStore) -> None:
        self.jobs = jobs
        self.store = store

    @app_commands.command(name="imagine-queue", description="Your images in progress here, and the server's queue")
    @app_commands.guild_only()
    async def queue(self, interaction: discord.Interaction[Any]) -> None:
        guild_id = interaction.guild_id or 0
        settings = await self.store.guilds.get(guild_id)
        load = await self.jobs.load(settings, interaction.user.id)
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
        await interaction.response.send_message(
            embed=reports.history(list(results), self.jobs.registry.name), ephemeral=True
        )
