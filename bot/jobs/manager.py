"""The job manager: the one owner of every job's life, from a prompt to the image in its place.

It knows nothing of Discord. Callers ask (`enqueue`, `confirm`, `abandon`,
`cancel`, `departures.reply_deleted`, …) and listen to events; only the manager's own
parts write a job's state, always through the `Ledger` (compare-and-set, one
event per transition):

* `Line` (bot/jobs/line.py): admission and each server's line;
* `Upstream` (bot/jobs/upstream.py): the submit, polling, deadlines;
* `Delivery` (bot/jobs/delivery.py): the image and end notices into their
  `Destination`, retried for hours, across restarts;
* `Departures` (bot/jobs/departures.py): jobs whose reply, channel or server
  went away end, and nothing more is sent there.

The store is the truth: every state is committed before the request or event
that follows it, so a process killed anywhere resumes from the last written
state and never pays for a job twice.

When processes share a PostgreSQL database the manager has an `owner` (this
process's name) and a `LeaseKeeper` (bot/jobs/leases.py): it works only on
the jobs it holds, takes over those of a process that died, and hands a
member's cancel or a deleted reply to the process holding the job.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime, timedelta
from typing import Any

from bot.clock import Clock
from bot.jobs.budget import Budget, BudgetGuard
from bot.jobs.delivery import Delivery, Destination, Reply
from bot.jobs.departures import REPLY_GONE, Departures
from bot.jobs.events import (
    JobCancelled,
    JobCompleted,
    JobEvent,
    JobFailed,
    JobQueued,
    Listener,
)
from bot.jobs.leases import LeaseKeeper
from bot.jobs.ledger import Ledger
from bot.jobs.line import RESTARTED_WHILE_READING, RESTARTED_WHILE_WAITING, Line, Load, Ticket
from bot.jobs.orders import EditInput, order, source_input
from bot.jobs.prices import PriceBook
from bot.jobs.upstream import RESTARTED_WHILE_SUBMITTING, CancelOutcome, Upstream
from bot.model_registry import ModelRegistry, load_registry, server_models
from bot.model_spec import InvalidInputError
from bot.polling import AdaptivePolicy, PollPolicy
from bot.runcomfy import RunComfyClient
from bot.settings import Settings
from storage.base import JobStore
from storage.models import (
    FINAL_STATES,
    MADE_STATES,
    FailureKind,
    GuildSettings,
    Job,
    JobInput,
    JobOrigin,
    JobState,
    NewJob,
)
from storage.sqlite_common import StoreUnavailableError

log = logging.getLogger(__name__)

LEFT_A_SLOT = (JobCompleted, JobFailed, JobCancelled)
PRUNE_FIRST_DELAY = 60.0  # seconds after the start, out of the way of resuming jobs
PRUNE_INTERVAL = 24 * 3600.0
# An input image no job names is swept once this old: long enough for the edit it was stored for (or a reroll
# between its click and its write) to name it first.
UNNAMED_INPUT_GRACE = timedelta(hours=1)


class JobManager:
    """Runs jobs against RunComfy and delivers their results; one per process."""

    def __init__(
        self,
        client: RunComfyClient,
        store: JobStore,
        *,
        model: str,
        clock: Clock | None = None,
        policy: PollPolicy | None = None,
        job_timeout: float = 900.0,
        unknown_state_timeout: float = 120.0,
        delivery_retry_hours: float = 24.0,
        retention_days: int = 0,
        budget: Budget | None = None,
        balance_probe_seconds: float = 300.0,
        max_concurrent_polls: int = 32,
        owner: str | None = None,
        lease_seconds: float = 30.0,
        registry: ModelRegistry | None = None,
    ) -> None:
        """`owner`: this process's name, when processes share the store (it must have leases); None for one."""
        self.client = client
        self.store = store
        self.model = model
        self.registry = registry or load_registry(model)
        self.clock = clock or Clock()
        lease = timedelta(seconds=lease_seconds)
        self.ledger = Ledger(store, self.clock, owner=owner, lease=lease)
        self.keeper: LeaseKeeper | None = None
        if owner is not None:
            if store.leases is None:
                raise ValueError("an owner needs a store several processes can share (PostgreSQL)")
            self.keeper = LeaseKeeper(
                store.leases,
                self.clock,
                owner,
                lease=lease,
                resume=self._resume,
                request=self._request,
                get=store.get,
                pump=lambda guild_id: self.line.timer.schedule(guild_id, self.clock.now()),
            )
        self.policy: PollPolicy = policy or AdaptivePolicy()
        self.prices = PriceBook(client.model_info, self.clock, default=model)
        self.upstream = Upstream(
            self.ledger,
            client,
            self.clock,
            registry=self.registry,
            policy=self.policy,
            job_timeout=job_timeout,
            unknown_state_timeout=unknown_state_timeout,
            concurrency=max_concurrent_polls,
        )
        self.budget = BudgetGuard(store, self.clock, budget or Budget(), self.prices.known)
        self.line = Line(
            self.ledger,
            self.clock,
            self.upstream.send,
            self.spawn,
            job_timeout=job_timeout,
            budget=self.budget,
            probe_seconds=balance_probe_seconds,
        )
        self.upstream.no_credit = self.line.out_of_credit
        self.delivery = Delivery(
            self.ledger,
            client,
            self.clock,
            self.prices,
            retry_window=delivery_retry_hours * 3600,
            on_channel_gone=lambda channel_id, reason: self.spawn(
                self.departures.channel_gone(channel_id), "channel-gone"
            ),
        )
        # Where jobs are shown going away (a reply, a channel, a server): what callers report there.
        self.departures = Departures(self.ledger, client, self.delivery, self.clock, self.keeper)
        self.retention = timedelta(days=retention_days)
        self._tasks: set[asyncio.Task[None]] = set()
        self._housekeeping: asyncio.Task[None] | None = None
        self._started = False
        self.ledger.subscribe(self._on_event)

    @classmethod
    def from_settings(
        cls,
        client: RunComfyClient,
        store: JobStore,
        settings: Settings,
        *,
        clock: Clock | None = None,
        owner: str | None = None,
    ) -> JobManager:
        policy = AdaptivePolicy.for_model(
            settings.runcomfy_model,
            min_interval=settings.poll_min_interval_seconds,
            max_interval=settings.poll_max_interval_seconds,
        )
        return cls(
            client,
            store,
            model=settings.runcomfy_model,
            clock=clock,
            policy=policy,
            job_timeout=settings.job_timeout_seconds,
            unknown_state_timeout=settings.unknown_state_timeout_seconds,
            delivery_retry_hours=settings.delivery_retry_hours,
            retention_days=settings.job_retention_days,
            budget=Budget(settings.budget_images_per_day, settings.budget_usd_per_day, settings.budget_usd_per_month),
            balance_probe_seconds=settings.runcomfy_balance_probe_seconds,
            owner=owner,
            lease_seconds=settings.lease_seconds,
            registry=load_registry(settings.runcomfy_model, settings.runcomfy_models_file),
        )

    # -- lifecycle -------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Hear every event (called synchronously: return quickly); returns the function that stops that."""
        return self.ledger.subscribe(listener)

    async def start(
        self,
        destination: Destination,
        resume: Callable[[Job], bool] = lambda job: True,
        *,
        predecessor: str | None = None,
    ) -> int:
        """Learn from finished jobs, pick up the unfinished jobs that are this process's, start the workers.

        Returns how many jobs were resumed. One process (no owner): every job
        `resume` accepts. Processes sharing the database: the jobs of
        `predecessor` (the dead process this one replaces, if known), then every
        orphan; `resume` is not asked, since any process may take any Discord
        job. A job found in `submitting` may exist upstream: it is failed with a
        clear message, never sent again. A waiting job whose reply was never
        written down asks the destination whether the reply exists. Images and
        notices still owed are delivered.
        """
        self.delivery.destination = destination
        if isinstance(self.policy, AdaptivePolicy):
            self.policy.learn_all(await self.store.recent_timings(self.model, limit=200))
        await self.upstream.recall_queue_speed()
        if self.keeper is None:
            found = {job.id: job for job in [*await self.store.unfinished(), *await self.store.owing_delivery()]}
            jobs = [job for job in found.values() if resume(job)]
            for job in jobs:
                await self._resume(job)
            resumed = len(jobs)
        else:
            await self.keeper.start()
            resumed = 0
            if predecessor is not None and self.store.leases is not None:
                adopted = await self.store.leases.adopt(predecessor, self.keeper.owner, until=self.keeper.until())
                for job in adopted:
                    await self._resume(job)
                resumed = len(adopted)
            resumed += await self.keeper.take_over()
        for worker in (self.upstream.worker, self.delivery.worker, self.line.timer):
            worker.start()
        self._housekeeping = asyncio.create_task(self._prune_daily(), name="prune-old-jobs")
        self._started = True
        log.info("job manager started, %d unfinished jobs resumed", resumed)
        return resumed

    async def _resume(self, job: Job) -> None:
        """Pick up a job this process now holds, found at a start or taken over from a process that died."""
        if job.state is JobState.WAITING:
            if job.origin.message_id is None:
                self.spawn(self._recover(job), f"recover-{job.id}")
            elif job.origin.guild_id is not None:
                self.line.timer.schedule(job.origin.guild_id, self.clock.now())
        elif job.state is JobState.SUBMITTING:
            await self.ledger.fail(job, RESTARTED_WHILE_SUBMITTING, expect=JobState.SUBMITTING, kind=FailureKind.FINAL)
        elif job.state.is_upstream_pending:
            self.upstream.resume(job)
        if job.owes_delivery:
            self.delivery.schedule(job)
        if self.keeper is not None and job.deleted_at is not None and not job.state.is_final:
            self.spawn(self.departures.gone(job, REPLY_GONE), f"gone-{job.id}")  # deleted while another process held it

    async def stop(self, grace: float = 10.0) -> None:
        """Stop every worker; in-flight steps get `grace` seconds to write their state, then are cancelled. With
        leases, nothing is taken over from the moment the stop begins, and the leases are given up only once
        nothing of this process can write any more (a submit on its way included)."""
        if self.keeper is not None:
            await self.keeper.stop_taking_over()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            await asyncio.gather(self._housekeeping, return_exceptions=True)
        for worker in (self.line.timer, self.upstream.worker, self.delivery.worker):
            await worker.stop(grace)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=grace)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.keeper is not None:
            await self.keeper.stop()  # nothing more is written under these leases: hand them over
        await self.delivery.close()
        await self.prices.close()
        await self.upstream.save_queue_speed(final=True)

    @property
    def pending(self) -> int:
        """Jobs the workers are waiting on or stepping."""
        return self.upstream.worker.pending + self.delivery.worker.pending

    @property
    def alive(self) -> bool:
        return self._started and self.upstream.worker.alive and self.delivery.worker.alive

    def spawn(self, work: Coroutine[Any, Any, object], name: str) -> None:
        """Run work that must not hold up its caller (a listener, a lock), logging any failure; stop() waits."""

        async def guarded() -> None:
            try:
                await work
            except Exception:
                log.exception("%s failed", name)

        task = asyncio.create_task(guarded(), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- what callers ask for ------------------------------------------------------

    async def enqueue(self, new: NewJob, settings: GuildSettings | None) -> Ticket:
        """Write a new job in its server's line (LimitReachedError says why not); it starts once `confirm`ed."""
        return await self.line.enqueue(new, settings)

    async def attach_input(self, job_id: int, image: JobInput) -> Job | None:
        """An edit's image, downloaded after its job was written and acknowledged (no promise of time holds for a
        download), kept and named by the job, which may then be confirmed; None if the job left `waiting`
        meanwhile. The image goes in first: a failure before the job names it leaves only an image no job names,
        which the daily sweep removes."""
        image_id = await self.store.inputs.add(image, now=self.clock.now())
        return await self.store.give_input(job_id, image_id, now=self.clock.now(), owner=self.ledger.owner)

    async def confirm(self, job_id: int, message_id: int | None = None) -> Job | None:
        """The job's reply exists (`message_id`, when known, is written first): it may leave the line."""
        job = await self.store.get(job_id)
        if job is None or job.state is not JobState.WAITING:
            return job
        if message_id is not None and job.origin.message_id != message_id:
            job = await self.ledger.note(job_id, expect=JobState.WAITING, message_id=message_id) or job
        self.line.confirm(job)
        return job

    async def attach_message(self, job_id: int, message_id: int) -> Job | None:
        """The message now showing the job (written before anything else is done with it)."""
        return await self.ledger.note(job_id, expect=None, message_id=message_id)

    async def abandon(self, job_id: int, reason: str) -> Job | None:
        """The job's reply could not be made (the acknowledgement or the post failed): it ends without being sent,
        and without a notice, since there is nowhere to show one."""
        job = await self.store.get(job_id)
        if job is None:
            return None
        log.info("job %d not started: %s", job_id, reason, extra={"job_id": job_id})
        return await self.ledger.fail(
            job, f"not started: {reason}", expect=JobState.WAITING, kind=FailureKind.FINAL, notify=False
        )

    async def submit(self, new: NewJob) -> Job:
        """A job with no server and no reply to wait for (the CLI): written, then sent at once."""
        ticket = await self.line.enqueue(new, None)
        self.line.confirm(ticket.job)
        return ticket.job

    async def cancel(self, job_id: int) -> CancelOutcome:
        """Cancel on a member's request: a waiting job leaves the line; a queued one is cancelled upstream; a
        running one cannot be (RunComfy's rule) and is billed."""
        job = await self.store.get(job_id)
        if job is None:
            return CancelOutcome.UNKNOWN_JOB
        if self.keeper is not None and not self.ledger.mine(job) and not _made_or_over(job):
            answer = await self.keeper.ask(job, "cancel")  # the holder decides, and answers
            known = {outcome.value: outcome for outcome in CancelOutcome}
            if answer in known:
                return known[answer]
            ended = await self.store.get(job_id)
            done = ended is not None and _made_or_over(ended)
            return CancelOutcome.ALREADY_FINISHED if done else CancelOutcome.UNREACHABLE
        if job.state is JobState.WAITING:
            cancelled = await self.line.cancel(job)
            return CancelOutcome.CANCELLED if cancelled is not None else CancelOutcome.TOO_LATE
        return await self.upstream.cancel(job)

    async def pump(self, guild_id: int) -> None:
        """A server's settings changed (more slots): let its line move now."""
        await self.line.pump(guild_id)

    async def load(self, settings: GuildSettings, user_id: int) -> Load:
        return await self.line.load(settings, user_id)

    async def again(self, source: Job, settings: GuildSettings, origin: JobOrigin, *, exempt: bool) -> NewJob:
        """A reroll of `source`: the same model, prompt, ratio, images and input, a new seed; InvalidInputError when
        the server no longer offers the model or the input image's link is gone."""
        model = self.registry.get(source.model)
        if model is None or model not in server_models(self.registry, settings):
            raise InvalidInputError("model", f"This server doesn't offer {self.registry.name(source.model)} any more.")
        edit = self.kept_input(source)
        return order(
            model,
            prompt=source.prompt,
            ratio=source.aspect_ratio or None,
            seed=None,
            count=source.count,
            origin=origin,
            parent_id=source.id,
            exempt=exempt,
            edit=edit,
        )

    def kept_input(self, source: Job) -> EditInput | None:
        """The image `source` (an edit) started from, for a reroll or a remix: its stored image shared, not read
        or copied. None when `source` is no edit; InvalidInputError when its link no longer lives long enough."""
        return source_input(source, self.clock.now())

    async def mark_deleted(self, job_id: int) -> Job | None:
        """A member deleted the job's result message with its button: remembered for history and reports."""
        return await self.ledger.note(job_id, expect=FINAL_STATES, owned=False, deleted_at=self.clock.now())

    def eta(self, job: Job) -> datetime | None:
        return self.policy.expected_finish(job)

    async def jobs(self, job_ids: Sequence[int]) -> list[Job]:
        """The current rows of some jobs (for the CLI and tests)."""
        found = [await self.store.get(job_id) for job_id in job_ids]
        return [job for job in found if job is not None]

    async def _prune_daily(self) -> None:
        """Soon after the start, then once a day: delete finished jobs older than JOB_RETENTION_DAYS (their usage
        totals stay; 0 keeps every job), and input images no job names (an edit that ended while its image was read)."""
        await asyncio.sleep(PRUNE_FIRST_DELAY)
        while True:
            try:
                if self.retention:
                    pruned = await self.store.prune(before=self.clock.now() - self.retention)
                    if pruned:
                        log.info("pruned %d jobs older than %d days", pruned, self.retention.days)
                swept = await self.store.prune_inputs(before=self.clock.now() - UNNAMED_INPUT_GRACE)
                if swept:
                    log.info("swept %d input image(s) no job names", swept)
            except StoreUnavailableError as error:
                log.warning("old jobs not pruned this time: %s", error.reason)
            await asyncio.sleep(PRUNE_INTERVAL)

    # -- how the parts hear of each other ---------------------------------------------

    def _on_event(self, event: JobEvent) -> None:
        job = event.job
        if self.keeper is not None and job.origin.guild_id is not None and isinstance(event, LEFT_A_SLOT):
            self.keeper.freed_slot(job.origin.guild_id)  # another process's waiting job of the server may start
        if isinstance(event, JobQueued):
            self.line.credit_back()
        elif isinstance(event, JobCompleted):
            self.delivery.prefetch(job)
            self.delivery.schedule(job)
            self.line.wake(job)
        elif isinstance(event, JobFailed | JobCancelled):
            self.upstream.forget(job.id)
            self.line.forget(job.id)
            self.delivery.forget(job.id)
            self.delivery.schedule(job)
            self.line.wake(job)

    async def _request(self, job: Job, message: dict[str, Any]) -> str | None:
        """Another process asked something of a job this process holds: a member's cancel (answered with its
        outcome), or a deleted reply."""
        op = message.get("op")
        if op == "cancel":
            return (await self.cancel(job.id)).value
        if op == "gone":
            await self.departures.gone(job, str(message.get("reason") or REPLY_GONE))
        return None

    async def _recover(self, job: Job) -> None:
        """A waiting job whose reply was never written down: the process died around its acknowledgement (or,
        for an edit, while its image was read). If the reply exists, keep the job's place; if it never did,
        nobody saw anything: drop it quietly; when nobody can tell, or the edit never got its image, fail it
        with a clear word (shown where the reply would be)."""
        if self.delivery.destination is None:
            raise RuntimeError("recovering a reply needs the destination start() was given")
        found = await self.delivery.destination.recover_reply(job)
        if found.state is not Reply.NEVER and job.awaits_input:
            await self.ledger.fail(job, RESTARTED_WHILE_READING, expect=JobState.WAITING, kind=FailureKind.FINAL)
        elif found.state is Reply.FOUND:
            log.info("job %d: reply found after a restart; it keeps its place", job.id, extra={"job_id": job.id})
            await self.confirm(job.id, found.message_id)
        elif found.state is Reply.NEVER:
            await self.ledger.fail(
                job, "not started: the command was never acknowledged", expect=JobState.WAITING, notify=False
            )
        else:
            await self.ledger.fail(job, RESTARTED_WHILE_WAITING, expect=JobState.WAITING, kind=FailureKind.FINAL)


def _made_or_over(job: Job) -> bool:
    """Nothing left to cancel: the image is made (paid for), or the job ended."""
    return job.state.is_final or job.state in MADE_STATES
