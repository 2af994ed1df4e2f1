"""The cogs, each given only the services it uses, for `bot/app.py`'s `setup_hook`.

The services are built once (as discord.py's `examples/advanced_startup.py`
builds its pool and session before the cogs): the job manager and the store
come from `setup_hook`; the courier (every message the bot writes for a job)
and the start flow shared by `/imagine` and remix are built here. The
translator is set before any sync, so its localisations go out with it, and
`python -m bot sync` registers `app_commands_to_sync()` with the same
translator, so both paths publish the same commands.
"""

from __future__ import annotations

from discord import app_commands
from discord.ext import commands

from bot.attachments import AttachmentFetcher
from bot.clock import Clock
from bot.images import ImageWorkers
from bot.jobs import JobManager
from cogs.admin import AdminCog
from cogs.courier import ReplyCourier
from cogs.delivery import DeliveryCog, DiscordDestination
from cogs.gallery import GalleryCog, edit_image_menu
from cogs.history import HistoryCog
from cogs.imagine import ImagineCog
from cogs.rerolls import RerollCog
from cogs.results import ResultsCog
from cogs.starter import JobStarter
from cogs.translations import CommandTranslator
from storage.base import JobStore

AppCommand = app_commands.Command[commands.Cog, ..., None] | app_commands.Group | app_commands.ContextMenu


async def add_cogs(
    bot: commands.Bot,
    jobs: JobManager,
    store: JobStore,
    *,
    model: str,
    clock: Clock,
    images: ImageWorkers,
    fetcher: AttachmentFetcher,
) -> DiscordDestination:
    """Add every cog; returns the destination the job manager delivers to."""
    courier = ReplyCourier(
        bot,
        clock,
        on_gone=lambda job, channel: jobs.spawn(
            jobs.departures.reply_gone(job.id, channel=channel), f"reply-gone-{job.id}"
        ),
    )
    starter = JobStarter(jobs, store.guilds, model=model, fetcher=fetcher)
    await bot.tree.set_translator(CommandTranslator())
    await bot.add_cog(ImagineCog(starter, jobs, store))
    await bot.add_cog(RerollCog(bot, jobs, store, courier))
    await bot.add_cog(DeliveryCog(bot, jobs, courier))
    await bot.add_cog(ResultsCog(bot, starter, jobs, store))
    await bot.add_cog(HistoryCog(jobs, store))
    await bot.add_cog(AdminCog(jobs, store))
    await bot.add_cog(GalleryCog(bot, starter, store, clock))
    return DiscordDestination(bot, courier, store.guilds, images, jobs.registry)


def app_commands_to_sync() -> list[AppCommand]:
    """Every slash command the bot answers, for a sync from outside the running bot."""
    commands_: list[AppCommand] = []
    for cog in (ImagineCog, HistoryCog, AdminCog):
        commands_.extend(cog.__cog_app_commands__)
    commands_.append(edit_image_menu)
    return commands_


def translator() -> app_commands.Translator:
    return CommandTranslator()
