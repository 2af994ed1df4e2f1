"""Each server's line: who may have a job, and when each waiting job is sent.

Every Discord job starts in `waiting`: written before its reply exists, so a
reply a member can see always has a job behind it. It leaves the line (to
`submitting`) only once its reply is confirmed (the command was acknowledged,
or the reroll's message posted), and only when both its server has a free slot
(`server-jobs`) and its member is under their own limit of jobs at once
(`member-jobs`): a member's extra jobs wait their turn with their place shown,
and only a member with more than `member-queue` jobs waiting is refused, as
Midjourney does. Nothing waiting has been sent or billed, so a restart loses
none of them and none overtakes another.

Admission and every start decision for a server happen under that server's
lock, held only for database work (never for a Discord call), so two commands
at once cannot both take the last slot, and a burst of rerolls cannot hold up
an `/imagine` past Discord's 3 seconds. The locks are the store's
(`exclusive`): in memory for SQLite, PostgreSQL advisory locks when processes
share the database, so the operator's budget and a server's slots hold across
processes too. A line starts only the jobs this process holds; the others'
holders start theirs.

When RunComfy says the operator's account has no credit (error 400002),
nothing was created: the job goes back to its place, and no line starts
anything until a probe (one job, every RUNCOMFY_BALANCE_PROBE_SECONDS) is
accepted again; waiting members are told why, and everything resumes by itself.
"""

from __future__ import annotations

import logging
import secrets
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bot.clock import Clock
from bot.jobs.budget import BudgetGuard
from bot.jobs.events import JobAccepted, JobSubmitting, JobWaiting, WaitReason
from bot.jobs.ledger import Ledger
from bot.jobs.limits import Limit, LimitReachedError
from bot.jobs.worker import Worker
from bot.runcomfy import RunComfyError
from storage.base import JobStore
from storage.models import GuildLoad, GuildSettings, Job, JobState, NewJob

log = logging.getLogger(__name__)

QUOTA_WINDOW = timedelta(hours=24)
# The store lock key of the operator's budget; a server's lock is its id (a snowflake, always positive).
BUDGET_LOCK = -1
TOO_LONG_IN_LINE = (
    "It waited in this server's line for over {minutes} minutes, so it was not sent (nothing was charged)."
)
# Why a waiting job found with `deleted_at` (a crash between noting its place gone and ending it) ends unsent:
# which one went (reply, channel or server) is not kept with the job, only that its place to be shown did.
PLACE_GONE = "its reply, channel or server was gone"
RESTARTED_WHILE_WAITING = (
    "The bot restarted just as it took this request, before sending it anywhere, so nothing was charged. "
    "Please try again."
)
RESTARTED_WHILE_READING = (
    "The bot restarted while it was reading your image, before sending anything, so nothing was charged. "
    "Please try again."
)


@dataclass(frozen=True, slots=True)
class Ticket:
    """A job written in `waiting`, and its place in the server's line when it was written."""

    job: Job
    position: int


@dataclass(frozen=True, slots=True)
class Load:
    """A server's slots and line, and one member's share: what `/imagine-queue` shows."""

    running: int
    waiting: int
    mine: tuple[Job, ...]
    positions: dict[int, int]  # job id -> place in the server's line
    quota_used: int
    quota_frees_at: datetime | None


Spawn = Callable[[Coroutine[Any, Any, object], str], None]
Send = Callable[[Job], Coroutine[Any, Any, object]]


class Line:
    def __init__(
        self,
        ledger: Ledger,
        clock: Clock,
        send: Send,
        spawn: Spawn,
        *,
        job_timeout: float,
        budget: BudgetGuard,
        probe_seconds: float = 300.0,
    ) -> None:
        self.ledger = ledger
        self.store: JobStore = ledger.store
        self.clock = clock
        self._send = send
        self._spawn = spawn
        self.max_wait = timedelta(seconds=job_timeout)
        self.budget = budget
        self._confirmed: set[int] = set()  # waiting jobs whose reply exists (acknowledged in this process)
        self._shown: dict[int, tuple[int, WaitReason]] = {}  # waiting job -> the place its reply shows
        # Wakes a server's line when its oldest waiting job would pass the longest wait (or a probe is due).
        self.timer = Worker("line", clock, self.pump, concurrency=4)
        self.probe_every = timedelta(seconds=probe_seconds)
        self.out_of_credit_since: datetime | None = None
        self._next_probe: datetime | None = None
        self._probing: int | None = None  # the one job sent to see whether the credit is back
        self._guilds: set[int] = set()  # servers whose lines were seen, to wake them all when credit returns

    async def enqueue(self, new: NewJob, settings: GuildSettings | None) -> Ticket:
        """Check the member's limits and write the job in `waiting`; LimitReachedError says why not.

        `settings` None means a job with no server (the CLI): no limits, no line.
        """
        if settings is None:
            job = await self._create(new, 1)
            return Ticket(job, 1)
        # The budget is the whole bot's: one admission at a time checks it (always after the server's lock).
        async with self.store.exclusive(settings.guild_id), self.store.exclusive(BUDGET_LOCK):
            load = await self._admit(new, settings)
            job = await self._create(new, load.waiting + 1)
        return Ticket(job, load.waiting + 1)

    async def _admit(self, new: NewJob, settings: GuildSettings) -> GuildLoad:
        """The member's limits (unless the server exempts them) and the operator's budget (nobody is exempt),
        checked for `new`; the server's load they were checked against."""
        user_id = new.origin.user_id or 0
        load = await self.store.guild_load(settings.guild_id, user_id)
        if not new.exempt:
            # Of the member's jobs, those past their limit of jobs at once wait for one of their own.
            backlog = max(0, load.mine_active + load.mine_waiting - settings.member_concurrent)
            await self._check_member(settings, user_id, backlog, new.count)
        await self.budget.check(new.count, new.cost_usd)
        return load

    async def _check_member(self, settings: GuildSettings, user_id: int, backlog: int, images: int = 1) -> None:
        used = await self.store.billable_since(user_id, settings.guild_id, self.clock.now() - QUOTA_WINDOW)
        if len(used) + images > settings.member_daily:
            # Enough room comes back when the image that many places past the limit leaves the window.
            freed = used[min(len(used) - 1, max(0, len(used) + images - settings.member_daily - 1))] if used else None
            raise LimitReachedError(
                Limit.DAILY,
                used=len(used),
                allowed=settings.member_daily,
                frees_at=freed + QUOTA_WINDOW if freed else None,
                asked=images,
            )
        if backlog >= settings.member_queue:
            raise LimitReachedError(Limit.QUEUE, used=backlog, allowed=settings.member_queue)

    async def _create(self, new: NewJob, position: int) -> Job:
        job = await self.ledger.create(
            new,
            state=JobState.WAITING,
            post_nonce=str(secrets.randbits(63)),
            event=lambda row: JobAccepted(row, position),
        )
        log.info("job %d accepted (#%d in line)", job.id, position, extra={"job_id": job.id})
        return job

    # -- leaving the line ----------------------------------------------------------

    def confirm(self, job: Job) -> None:
        """The job's reply exists: it may leave the line now (or when its turn comes)."""
        self._confirmed.add(job.id)
        self.wake(job)

    def wake(self, job: Job) -> None:
        """Something changed for the job's server (a slot freed, a job confirmed): let the line move."""
        guild_id = job.origin.guild_id
        if guild_id is None:
            if job.state is JobState.WAITING:
                self._spawn(self._start_alone(job), f"start-{job.id}")
            return
        self.timer.schedule(guild_id, self.clock.now())

    def forget(self, job_id: int) -> None:
        self._confirmed.discard(job_id)
        self._shown.pop(job_id, None)
        if self._probing == job_id:  # the probe ended some other way: the next one may go
            self._probing = None

    def ready(self, job: Job) -> bool:
        """Only a job whose reply exists leaves the line: one written just before its acknowledgement must not be
        sent if that acknowledgement fails (or the process dies first). Nor does an edit still without its image
        (`Job.awaits_input`): RunComfy would be sent a link nobody checked, and bill it."""
        return (job.id in self._confirmed or job.origin.message_id is not None) and not job.awaits_input

    async def _start_alone(self, job: Job) -> None:
        started = await self.ledger.move(job.id, JobState.SUBMITTING, expect=JobState.WAITING, event=JobSubmitting)
        if started is not None:
            await self._send(started)

    async def pump(self, guild_id: int) -> None:
        """Start as many waiting jobs as the server and their members have room for, oldest first; show the rest
        their place; end those that waited too long."""
        starting: list[Job] = []
        self._guilds.add(guild_id)
        async with self.store.exclusive(guild_id):
            now = self.clock.now()
            paused = self.out_of_credit_since is not None
            may_probe = paused and self._probing is None and self._next_probe is not None and now >= self._next_probe
            settings = await self.store.guilds.get(guild_id)
            live = list(await self.store.guild_unfinished(guild_id))
            active = [job for job in live if job.state.holds_slot]
            running = Counter(job.origin.user_id for job in active)  # an exempt job skips the count, not into it
            free = settings.guild_concurrent - len(active)
            place = 0
            oldest: datetime | None = None
            for job in live:
                if job.state is not JobState.WAITING:
                    continue
                if job.deleted_at is not None:
                    # Its place is gone: never sent. JobManager._gone ends it right after writing deleted_at; a
                    # crash in between would leave it waiting for ever, holding a place among its member's jobs.
                    if self.ledger.mine(job):
                        await self.cancel(job, PLACE_GONE)
                    continue
                if not self.ready(job):
                    continue
                if not self.ledger.mine(job):
                    place += 1  # another process holds it: it counts in the line, its holder starts and shows it
                    continue
                if now - job.created_at > self.max_wait:
                    minutes = round(self.max_wait.total_seconds() / 60)
                    await self.ledger.fail(job, TOO_LONG_IN_LINE.format(minutes=minutes), expect=JobState.WAITING)
                    continue
                member_free = job.exempt or running[job.origin.user_id] < settings.member_concurrent
                if free > 0 and member_free and (not paused or may_probe):
                    started = await self.ledger.move(
                        job.id, JobState.SUBMITTING, expect=JobState.WAITING, event=JobSubmitting
                    )
                    if started is not None:
                        starting.append(started)
                        free -= 1
                        running[job.origin.user_id] += 1
                        self.forget(job.id)
                        if paused:
                            self._probing, may_probe = started.id, False
                    continue
                place += 1
                oldest = oldest or job.created_at
                self._show(job, place, self._wait_reason(paused=paused, room=free > 0))
            if oldest is not None:
                self.timer.schedule(guild_id, oldest + self.max_wait + timedelta(seconds=1))
            if paused and self._next_probe is not None and place:
                self.timer.schedule(guild_id, max(self._next_probe, now))
        for job in starting:
            log.info("job %d leaves the line", job.id, extra={"job_id": job.id})
            self._spawn(self._send(job), f"send-{job.id}")

    # -- RunComfy's credit ------------------------------------------------------------------

    async def out_of_credit(self, job: Job, error: RunComfyError) -> None:
        """RunComfy refused to submit `job` for want of credit: nothing was created, so the job goes back to its
        place, and the lines wait for a probe to be accepted (every `probe_every`). A job with no server (the
        CLI) fails at once: the operator at the terminal is the one to tell."""
        if job.origin.guild_id is None:
            await self.ledger.fail(job, error, expect=JobState.SUBMITTING)
            return
        now = self.clock.now()
        if self.out_of_credit_since is None:
            self.out_of_credit_since = now
            log.warning(
                "RunComfy says the account has no credit left: new images wait; one is tried every %d s",
                self.probe_every.total_seconds(),
            )
        self._next_probe = now + self.probe_every
        self._probing = None
        self._shown.pop(job.id, None)
        self._confirmed.add(job.id)  # its reply exists: it was sent once already
        await self.ledger.move(
            job.id,
            JobState.WAITING,
            expect=JobState.SUBMITTING,
            event=lambda row: JobWaiting(row, 1, WaitReason.CREDIT),
        )
        for guild_id in {*self._guilds, job.origin.guild_id}:
            self.timer.schedule(guild_id, now)  # show every waiting member why

    def credit_back(self) -> None:
        """A submit was accepted: the credit is back, every line moves again."""
        if self.out_of_credit_since is None:
            return
        log.warning("RunComfy accepts jobs again: the waiting lines move")
        self.out_of_credit_since = self._next_probe = self._probing = None
        for guild_id in self._guilds:
            self.timer.schedule(guild_id, self.clock.now())

    @staticmethod
    def _wait_reason(*, paused: bool, room: bool) -> WaitReason:
        if paused:
            return WaitReason.CREDIT
        return WaitReason.MEMBER if room else WaitReason.SERVER

    def _show(self, job: Job, place: int, reason: WaitReason) -> None:
        if self._shown.get(job.id) != (place, reason):
            self._shown[job.id] = (place, reason)
            self.ledger.emit(JobWaiting(job, place, reason))

    async def cancel(self, job: Job, reason: str | None = None) -> Job | None:
        """Take a waiting job out of the line (nothing was sent: nothing to ask RunComfy); the cancelled job, or
        None when it is not waiting (any more). Its member is told, unless its reply is gone."""
        cancelled = await self.ledger.cancel(job, reason, expect=JobState.WAITING)
        if cancelled is not None:
            self.forget(job.id)
        return cancelled

    # -- what a server's jobs look like -----------------------------------------------

    async def load(self, settings: GuildSettings, user_id: int) -> Load:
        live = await self.store.guild_unfinished(settings.guild_id)
        waiting = [job for job in live if job.state is JobState.WAITING]
        used = await self.store.billable_since(user_id, settings.guild_id, self.clock.now() - QUOTA_WINDOW)
        return Load(
            running=sum(1 for job in live if job.state.holds_slot),
            waiting=len(waiting),
            mine=tuple(job for job in live if job.origin.user_id == user_id),
            positions={job.id: place for place, job in enumerate(waiting, start=1)},
            quota_used=len(used),
            quota_frees_at=used[0] + QUOTA_WINDOW if used else None,
        )
