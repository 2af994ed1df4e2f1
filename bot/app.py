"""The Discord bot process: `python -m bot run` and `python -m bot sync`.

`setup_hook` opens the one HTTP session and the one database connection,
builds the RunComfy client and the job manager, loads the cog, registers the
persistent buttons and only then resumes unfinished jobs, so their events find
a subscriber. Commands are not synced blindly on every start (Discord allows
200 command creates a day per guild): only to `DISCORD_GUILD_IDS` during
development; globally with `python -m bot sync --global`, once per release.

With `SHARD_COUNT` set the bot is an `AutoShardedBot` running the shards in
`SHARD_IDS` (all of them by default), so several processes can split one bot.
On one SQLite file each resumes only the jobs of guilds on its shards; with
`DATABASE_URL` (PostgreSQL) they register their shards (bot/processes.py),
share one RunComfy request budget, and hold jobs by lease, so a process that
dies has its jobs taken over by the others. SIGTERM and SIGINT stop it
gracefully (see bot/shutdown.py).
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import aiohttp
import discord
import yarl
from discord import app_commands
from discord.ext import commands

from bot import shutdown
from bot.attachments import AttachmentFetcher
from bot.clock import Clock
from bot.download import open_session
from bot.health import HealthServer
from bot.images import ImageWorkers
from bot.jobs import JobManager
from bot.metrics import BotMetrics, MeteredRunComfyClient
from bot.processes import Membership
from bot.settings import Settings
from cogs.access import guild_allowed, refuse
from cogs.buttons import ImagineButton
from cogs.failures import answer_failure
from cogs.wiring import add_cogs, app_commands_to_sync, translator
from storage.models import Job
from storage.open import AnyJobStore, open_request_budget, open_store
from storage.postgres.jobs import PostgresJobStore

log = logging.getLogger(__name__)

# What the invite asks for, and all the bot uses: View Channels, Send Messages, Embed Links,
# Attach Files, Read Message History, Add Reactions = 117824 (docs/discord-platform.md, PERM).
INVITE_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    embed_links=True,
    attach_files=True,
    read_message_history=True,
    add_reactions=True,
)
INVITE_SCOPES = ("bot", "applications.commands")


def invite_url(application_id: int) -> str:
    return discord.utils.oauth_url(application_id, permissions=INVITE_PERMISSIONS, scopes=INVITE_SCOPES)


def point_discord_at(settings: Settings) -> None:
    """Send discord.py's REST and gateway traffic to the configured endpoints (the fake Discord in tests)."""
    discord.http.Route.BASE = settings.discord_api_base_url.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)


def without_voice() -> None:
    """The bot never joins voice: skip discord.py's start-up warnings about voice libraries it does not need."""
    discord.VoiceClient.warn_nacl = False
    discord.VoiceClient.warn_dave = False


def intents() -> discord.Intents:
    """Guilds (channels, permissions, a server leaving), reactions (🔄 reroll) and guild messages (only to hear
    that a job's reply was deleted); nothing privileged, so message content stays hidden from the bot."""
    chosen = discord.Intents.none()
    chosen.guilds = True
    chosen.guild_reactions = True
    chosen.guild_messages = True
    return chosen


def shard_of(guild_id: int | None, shard_count: int) -> int:
    """The shard that receives a guild's events: Discord's `(guild_id >> 22) % shard_count`; DMs are on shard 0."""
    if guild_id is None:
        return 0
    return (guild_id >> 22) % shard_count


class ImagineTree(app_commands.CommandTree):
    """The command tree; while the bot shuts down every command gets "try again in a minute", and in a server
    the operator does not allow, "not set up for this server"."""

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        return not await refuse(interaction)

    async def on_error(self, interaction: discord.Interaction[Any], error: app_commands.AppCommandError, /) -> None:
        """The one answer to every command's failure (cogs/failures.py)."""
        await answer_failure(interaction, error)


class ImagineBot(commands.Bot):
    user: discord.ClientUser

    def __init__(self, settings: Settings, *, clock: Clock | None = None, **options: Any) -> None:
        """`options` go to discord.py's Client (tests shorten `guild_ready_timeout`); `clock` is the jobs' clock
        (tests pass one they can move forward)."""
        self.settings = settings
        self.clock = clock or Clock()
        self.metrics = BotMetrics()
        without_voice()
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents(),
            help_command=None,
            allowed_mentions=discord.AllowedMentions.none(),
            tree_cls=ImagineTree,
            http_trace=self.metrics.discord_trace(),
            max_messages=None,  # nothing reads cached messages; guild message events would only fill memory
            **options,
        )
        self.session: aiohttp.ClientSession | None = None
        self.image_workers: ImageWorkers | None = None
        self.store: AnyJobStore | None = None
        self.membership: Membership | None = None  # with DATABASE_URL: this process in the registry
        self.lost_shards = False
        self.jobs: JobManager | None = None
        self.health: HealthServer | None = None
        self.stopping = False
        self._shutdown: asyncio.Task[None] | None = None
        self._close_task: asyncio.Task[None] | None = None
        self._deadline: float | None = None

    async def setup_hook(self) -> None:
        settings = self.settings
        self.session = open_session(settings)  # every result host checked and pinned (bot/download.py)
        self.image_workers = ImageWorkers.from_settings(settings)
        # Under Discord's 3 s to acknowledge: a command meeting a locked database gets an answer, not a timeout.
        self.store = store = await open_store(
            database_url=settings.postgres_url, database_path=settings.database_path, busy_timeout_ms=2000
        )
        owner: str | None = None
        if isinstance(store, PostgresJobStore):
            # Registered before the gateway connects: overlapping shards stop here, with one sentence.
            self.membership = await Membership.join(store, settings, clock=self.clock, on_lost=self._lost_shards)
            owner = self.membership.process_id
        limiter = await open_request_budget(store, settings.runcomfy_requests_per_second)
        token = settings.require("RUNCOMFY_API_TOKEN")
        client = MeteredRunComfyClient.metered(
            self.session, settings, token=token, limiter=limiter, metrics=self.metrics, image_workers=self.image_workers
        )
        self.jobs = JobManager.from_settings(client, store, settings, clock=self.clock, owner=owner)
        self.add_dynamic_items(ImagineButton)
        destination = await add_cogs(
            self,
            self.jobs,
            self.store,
            model=settings.runcomfy_model,
            clock=self.clock,
            images=self.image_workers,
            fetcher=AttachmentFetcher.from_settings(self.session, settings, self.image_workers),
        )
        self.jobs.subscribe(self.metrics.on_job_event)
        for guild_id in settings.discord_guild_ids:
            if not self.owns_guild(guild_id):
                continue  # the process running that guild's shard syncs it
            guild = discord.Object(guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d commands to guild %d", len(synced), guild_id)
        if settings.health_port is not None:
            self.health = HealthServer(self, settings.health_host, settings.health_port)
            await self.health.start()
        if self.membership is None:
            await self.jobs.start(destination, resume=self.owns)
        else:  # any process takes over any Discord job whose holder died, whatever its shard
            await self.jobs.start(destination, predecessor=self.membership.predecessor)

    # -- which jobs are this process's -------------------------------------

    def owns_guild(self, guild_id: int | None) -> bool:
        """Whether this process runs the shard that receives `guild_id`'s events (always, unsharded)."""
        shards = self.settings.owned_shards
        if shards is None or self.settings.shard_count is None:
            return True
        return shard_of(guild_id, self.settings.shard_count) in shards

    def owns(self, job: Job) -> bool:
        """Discord jobs of this process's shards are its to resume; CLI jobs (no channel) are not."""
        return job.origin.channel_id is not None and self.owns_guild(job.origin.guild_id)

    def _lost_shards(self) -> None:
        """Another process took this one's shards (it was silent for a lease): stop, exit status 1."""
        self.lost_shards = True
        self.request_shutdown("shards taken over by another process")

    # -- health --------------------------------------------------------------

    def gateway_connected(self) -> bool:
        if self.is_closed() or not self.is_ready():
            return False
        ws = self.ws
        return ws is not None and ws.open

    @property
    def gateway_latency(self) -> float | None:
        latency = self.latency
        return latency if math.isfinite(latency) else None

    # -- stopping --------------------------------------------------------------

    def dispatch(self, event_name: str, /, *args: Any, **kwargs: Any) -> None:
        if event_name in shutdown.REFUSED_EVENTS and (self.stopping or not self._allowed_event(args)):
            return  # a reaction has no reply: while stopping, or from a server not allowed, it is not heard
        super().dispatch(event_name, *args, **kwargs)

    def _allowed_event(self, args: tuple[Any, ...]) -> bool:
        return guild_allowed(self, getattr(args[0], "guild_id", None) if args else None)

    # -- the servers the operator allows ---------------------------------------------

    async def on_guild_join(self, guild: discord.Guild) -> None:
        await self._leave_if_not_allowed(guild)

    async def on_ready(self) -> None:
        for guild in list(self.guilds):
            await self._leave_if_not_allowed(guild)

    async def _leave_if_not_allowed(self, guild: discord.Guild) -> None:
        if guild_allowed(self, guild.id):
            return
        log.warning("leaving server %d: not in DISCORD_ALLOWED_GUILD_IDS", guild.id)
        try:
            await guild.leave()
        except discord.HTTPException as error:
            log.warning("could not leave server %d (%d); its commands are refused meanwhile", guild.id, error.status)

    def request_shutdown(self, reason: str = "shutdown requested") -> None:
        """The signal handler: stop taking commands now, then close within SHUTDOWN_TIMEOUT_SECONDS."""
        if self._shutdown is not None:
            log.info("%s: already shutting down", reason)
            return
        log.info("%s: shutting down; new commands are refused, in-flight work finishes", reason)
        self.stopping = True
        self._shutdown = asyncio.create_task(self._graceful_close(), name="graceful-shutdown")

    async def _graceful_close(self) -> None:
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + self.settings.shutdown_timeout_seconds
        budget = min(shutdown.DRAIN_SECONDS, self.settings.shutdown_timeout_seconds * 0.4)
        left = await shutdown.drain_handlers(budget)
        if left:
            log.warning("%d command handler(s) still running; closing anyway", left)
        await self.close()

    async def close(self) -> None:
        """Idempotent, and every caller waits for the whole sequence (bot.start() returns half-way through it)."""
        if self._close_task is None:
            self._close_task = asyncio.create_task(self._close_all(), name="bot-close")
        await asyncio.shield(self._close_task)

    async def closed(self) -> None:
        """Wait until a close that has begun (signal or error) has finished."""
        if self._shutdown is not None:
            await self._shutdown
        if self._close_task is not None:
            await self._close_task

    async def _close_all(self) -> None:
        self.stopping = True
        loop = asyncio.get_running_loop()
        deadline = self._deadline or loop.time() + self.settings.shutdown_timeout_seconds
        if self.jobs is not None:
            # Steps still running at the deadline are cancelled; their jobs resume on the next start.
            await self.jobs.stop(grace=max(0.5, deadline - loop.time() - 1.0))
        if self.membership is not None:
            await self.membership.leave()
        await super().close()
        if self.image_workers is not None:
            self.image_workers.close()
        if self.health is not None:
            await self.health.close()
        if self.store is not None:
            await self.store.close()
        if self.session is not None:
            await self.session.close()
        if self._shutdown is not None:  # asked to stop; a close on the way out of an error is no clean shutdown
            log.info("shut down cleanly")
        else:
            log.debug("closed")


class ShardedImagineBot(ImagineBot, commands.AutoShardedBot):
    """The same bot over several gateway connections (`SHARD_COUNT`, `SHARD_IDS`)."""

    def gateway_connected(self) -> bool:
        if self.is_closed() or not self.is_ready() or not self.shards:
            return False
        return all(not shard.is_closed() for shard in self.shards.values())


def build_bot(settings: Settings, **options: Any) -> ImagineBot:
    """An ImagineBot, sharded when SHARD_COUNT is set; `options` go to discord.py's Client."""
    if settings.shard_count is None:
        return ImagineBot(settings, **options)
    return ShardedImagineBot(settings, shard_count=settings.shard_count, shard_ids=settings.owned_shards, **options)


def run_bot(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; exit status 0 on a clean shutdown, 1 when another process took the shards."""
    token = settings.require("DISCORD_TOKEN")
    settings.require("RUNCOMFY_API_TOKEN")
    point_discord_at(settings)

    async def main() -> bool:
        """Whether the bot stopped because it lost its shards."""
        bot = build_bot(settings)
        loop = asyncio.get_running_loop()
        watchdog: list[asyncio.TimerHandle] = []

        def on_signal(name: str) -> None:
            bot.request_shutdown(name)
            if not watchdog:
                limit = settings.shutdown_timeout_seconds + shutdown.WATCHDOG_GRACE
                watchdog.append(loop.call_later(limit, shutdown.force_exit, limit))

        shutdown.install_signal_handlers(loop, on_signal)
        try:
            async with bot:
                await bot.start(token.get_secret_value())
        finally:
            await bot.closed()
            for timer in watchdog:
                timer.cancel()
        return bot.lost_shards

    return 1 if asyncio.run(main()) else 0


async def sync_commands(settings: Settings, *, global_: bool) -> int:
    """Register the slash commands: to `DISCORD_GUILD_IDS`, or globally; returns how many were synced."""
    token = settings.require("DISCORD_TOKEN")
    point_discord_at(settings)
    bot = commands.Bot(command_prefix=commands.when_mentioned, intents=discord.Intents.none())
    for command in app_commands_to_sync():
        bot.tree.add_command(command)
    await bot.tree.set_translator(translator())
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
