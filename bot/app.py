"""The Discord bot process: `python -m bot run` and `python -m bot sync`.

`setup_hook` opens the one HTTP session and the one database connection,
builds the RunComfy client and the job manager, loads the cog, registers the
persistent buttons and only then resumes unfinished jobs, so their events find
a subscriber. Commands are not synced blindly on every start (Discord allows
200 command creates a day per guild): only to `DISCORD_GUILD_IDS` during
development; globally with `python -m bot sync --global`, once per release.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import discord
import yarl
from aiolimiter import AsyncLimiter
from discord.ext import commands

from bot.jobs import JobManager
from bot.runcomfy import RunComfyClient
from bot.settings import Settings
from cogs.buttons import ImagineButton
from cogs.courier import ReplyCourier
from cogs.imagine import ImagineCog
from storage.models import Job
from storage.sqlite import SQLiteJobStore

log = logging.getLogger(__name__)


def point_discord_at(settings: Settings) -> None:
    """Send discord.py's REST and gateway traffic to the configured endpoints (the fake Discord in tests)."""
    discord.http.Route.BASE = settings.discord_api_base_url.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)


def intents() -> discord.Intents:
    """Guilds (channels and permissions) and reactions (🔄 reroll); nothing privileged."""
    chosen = discord.Intents.none()
    chosen.guilds = True
    chosen.guild_reactions = True
    return chosen


class ImagineBot(commands.Bot):
    user: discord.ClientUser

    def __init__(self, settings: Settings, **options: Any) -> None:
        """`options` go to discord.py's Client (tests shorten `guild_ready_timeout`)."""
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents(),
            help_command=None,
            allowed_mentions=discord.AllowedMentions.none(),
            **options,
        )
        self.settings = settings
        self.session: aiohttp.ClientSession | None = None
        self.store: SQLiteJobStore | None = None
        self.jobs: JobManager | None = None

    async def setup_hook(self) -> None:
        settings = self.settings
        self.session = aiohttp.ClientSession()
        self.store = await SQLiteJobStore.open(settings.database_path)
        limiter = AsyncLimiter(settings.runcomfy_requests_per_second, 1.0)
        token = settings.require("RUNCOMFY_API_TOKEN")
        client = RunComfyClient.from_settings(self.session, settings, token=token, limiter=limiter)
        self.jobs = JobManager.from_settings(client, self.store, settings)
        self.add_dynamic_items(ImagineButton)
        cog = ImagineCog(self, self.jobs, self.store, model=settings.runcomfy_model, courier=ReplyCourier(self))
        await self.add_cog(cog)
        for guild_id in settings.discord_guild_ids:
            guild = discord.Object(guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d commands to guild %d", len(synced), guild_id)
        await self.jobs.start(resume=self.owns)

    def owns(self, job: Job) -> bool:
        """Discord jobs are this process's to resume; CLI jobs (no channel) are not."""
        return job.origin.channel_id is not None

    async def close(self) -> None:
        if self.jobs is not None:
            await self.jobs.stop()
        await super().close()
        if self.store is not None:
            await self.store.close()
        if self.session is not None:
            await self.session.close()


def run_bot(settings: Settings) -> int:
    """Run until stopped; exit status 0 on a clean shutdown."""
    token = settings.require("DISCORD_TOKEN")
    settings.require("RUNCOMFY_API_TOKEN")
    point_discord_at(settings)
    bot = ImagineBot(settings)

    async def main() -> None:
        async with bot:
            await bot.start(token.get_secret_value())

    asyncio.run(main())
    return 0


async def sync_commands(settings: Settings, *, global_: bool) -> int:
    """Register the slash commands: to `DISCORD_GUILD_IDS`, or globally; returns how many were synced."""
    token = settings.require("DISCORD_TOKEN")
    point_discord_at(settings)
    bot = commands.Bot(command_prefix=commands.when_mentioned, intents=discord.Intents.none())
    for command in ImagineCog.__cog_app_commands__:
        bot.tree.add_command(command)
    async with bot:
        await bot.login(token.get_secret_value())
        if global_:
            return len(await bot.tree.sync())
        total = 0
        for guild_id in settings.discord_guild_ids:
            guild = discord.Object(guild_id)
            bot.tree.copy_global_to(guild=guild)
            total += len(await bot.tree.sync(guild=guild))
        return total
