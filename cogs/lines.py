"""Each server's line of jobs waiting for a free slot: places shown, jobs started in order, nothing lost.

A waiting job is a row in state `waiting` (see `cogs/limits.py` for who gets
in); this class moves the line. Whenever a job of a server finishes, is
cancelled, or the server gets more slots, `pump` starts as many waiting jobs as
there are free slots, oldest first, and edits the others' replies to their new
place. After a restart the lines move again once the bot is connected, so no
waiting job is lost and none overtakes another.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

import discord
from discord.ext import commands

from bot.jobs import JobManager
from cogs import render
from cogs.courier import ReplyCourier, UndeliverableError
from cogs.limits import AdmissionControl
from storage.base import JobStore
from storage.models import Job, JobState

log = logging.getLogger(__name__)

# Discord's name for an interaction's first response in the webhook message routes.
ORIGINAL_RESPONSE: Any = "@original"
TOKEN_MARGIN = timedelta(seconds=30)

RESTARTED_WHILE_WAITING = (
    "The bot restarted just as it took this request, before sending it anywhere, so nothing was charged. "
    "Please try again."
)


class WaitingLines:
    def __init__(self, bot: commands.Bot, store: JobStore, jobs: JobManager, courier: ReplyCourier) -> None:
        self.bot = bot
        self.store = store
        self.jobs = jobs
        self.courier = courier
        self.admission = AdmissionControl(store, jobs.clock)
        self._positions: dict[int, int] = {}  # waiting job id -> the place its reply shows
        self._confirmed: set[int] = set()  # waiting jobs of this process whose reply Discord has acknowledged
        self._since = jobs.clock()  # waiting jobs older than this process belong to one that died
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self.spawn(self._resume(), "resume-waiting")

    async def close(self) -> None:
        """A send in flight finishes its write; a job not yet sent simply waits for the next start."""
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=1.5)  # within the shutdown budget
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def spawn(self, coroutine: Coroutine[Any, Any, object], name: str) -> None:
        """Run work that must not hold up its caller (a job event, a lock), logging any failure."""

        async def guarded() -> None:
            try:
                await coroutine
            except Exception:
                log.exception("%s failed", name)

        task = asyncio.create_task(guarded(), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def show(self, job: Job, position: int) -> None:
        """Edit the job's reply to its place in line (only when the place changed)."""
        if self._positions.get(job.id) != position:
            self._positions[job.id] = position
            self.courier.show(job, render.waiting_for_slot(job, position))

    def remember(self, job: Job, position: int) -> None:
        """The reply already shows this place (it was posted with it)."""
        self._positions[job.id] = position

    def confirm(self, job: Job, position: int) -> None:
        """Discord acknowledged the job's reply: it may now be started; show its place, and let the line move
        (a slot may have freed while it was being acknowledged)."""
        self._confirmed.add(job.id)
        self.show(job, position)
        if job.origin.guild_id is not None:
            self.spawn(self.pump(job.origin.guild_id), f"pump-{job.origin.guild_id}")

    def _ready(self, job: Job) -> bool:
        """Only a job with an acknowledged reply leaves the line: one written just before its
        acknowledgement must not be sent if that acknowledgement fails (or the process dies first)."""
        return job.id in self._confirmed or job.origin.message_id is not None

    def freed(self, job: Job) -> None:
        """A job of this server finished one way or another: its slot goes to the next in line."""
        self._positions.pop(job.id, None)
        self._confirmed.discard(job.id)
        if job.origin.guild_id is not None:
            self.spawn(self.pump(job.origin.guild_id), f"pump-{job.origin.guild_id}")

    async def pump(self, guild_id: int) -> None:
        """Start as many waiting jobs as the server has free slots, oldest first; show the rest their place."""
        settings = await self.store.guilds.get(guild_id)
        starting, waiting = await self.admission.next_up(settings, self._ready)
        for place, job in enumerate(waiting, start=1):
            self.show(job, place)
        for job in starting:
            self._positions.pop(job.id, None)
            self._confirmed.discard(job.id)
            await self.jobs.send(job)

    async def cancel(self, job: Job) -> Job | None:
        """Take a waiting job out of the line (nothing was sent, nothing to ask RunComfy); the cancelled job,
        or None when it is not waiting (any more)."""
        guild_id = job.origin.guild_id
        if job.state is not JobState.WAITING or guild_id is None:
            return None
        async with self.admission.lock(guild_id):
            current = await self.store.get(job.id)
            if current is None or current.state is not JobState.WAITING:
                return None
            cancelled = await self.store.transition(
                job.id, JobState.CANCELLED, now=self.jobs.clock(), interaction_token=None
            )
        log.info("job %d cancelled while waiting", job.id, extra={"job_id": job.id})
        self.freed(cancelled)  # everyone behind it moves up
        return cancelled

    async def _resume(self) -> None:
        """After a restart: drop what was never confirmed, then move every line again, in order."""
        await self.bot.wait_until_ready()  # replies can only be edited once connected
        guilds: set[int] = set()
        for job in await self.store.unfinished():
            guild_id = job.origin.guild_id
            if job.state is not JobState.WAITING or guild_id is None or self.bot.get_guild(guild_id) is None:
                continue  # not waiting, or a server on another process's shards
            if job.origin.message_id is not None or job.created_at >= self._since or await self._recover(job):
                guilds.add(guild_id)
        for guild_id in sorted(guilds):
            await self.pump(guild_id)

    async def _recover(self, job: Job) -> bool:
        """A waiting job with no reply on record: the process died around its acknowledgement. Ask Discord
        whether the reply exists; if so, write its id down and keep the job's place (the member saw "thinking"
        and is waiting). If Discord says there was never a reply, the member saw "This interaction failed":
        drop the job quietly, nothing was sent. When Discord can't say, fail it with a clear word."""
        origin = job.origin
        if origin.interaction_token is None or origin.application_id is None:
            # A reroll whose message was never posted: nobody saw anything to wait for.
            await self._drop(job, "the process stopped before the reroll's message was posted")
            return False
        # An acknowledged interaction's token works for 15 minutes; one never acknowledged is refused at once
        # (404 within its 3 seconds, 401 after). Past the 15 minutes nobody can tell any more.
        if origin.token_expires_at is None or origin.token_expires_at - TOKEN_MARGIN <= self.jobs.clock():
            await self._abandon(job)
            return False
        webhook = discord.Webhook.partial(origin.application_id, origin.interaction_token, client=self.bot)
        try:
            reply = await webhook.fetch_message(ORIGINAL_RESPONSE)
        except discord.HTTPException as error:
            if error.status in (401, 404):
                await self._drop(job, "the command was never acknowledged")
            else:
                log.info("job %d: cannot tell if its reply exists (%d)", job.id, error.status, extra={"job_id": job.id})
                await self._abandon(job)
            return False
        await self.store.update(job.id, now=self.jobs.clock(), message_id=reply.id)
        log.info("job %d: reply found after a restart; it keeps its place", job.id, extra={"job_id": job.id})
        return True

    async def _drop(self, job: Job, why: str) -> None:
        await self.store.transition(
            job.id, JobState.FAILED, now=self.jobs.clock(), error=f"not started: {why}", interaction_token=None
        )
        log.info("job %d not started: %s", job.id, why, extra={"job_id": job.id})

    async def _abandon(self, job: Job) -> None:
        """Fail a waiting job whose reply may exist, saying so (the courier reaches the reply through the token
        if it still can, else posts a short message); nothing was sent."""
        job = await self.store.transition(job.id, JobState.FAILED, now=self.jobs.clock(), error=RESTARTED_WHILE_WAITING)
        log.info("job %d: restarted before its reply was confirmed; not started", job.id, extra={"job_id": job.id})
        try:
            await self.courier.deliver(job, render.failed(job, RESTARTED_WHILE_WAITING, retryable=False))
        except UndeliverableError as error:
            log.info("job %d: failure not shown: %s", job.id, error, extra={"job_id": job.id})
        await self.store.update(job.id, now=self.jobs.clock(), interaction_token=None)
