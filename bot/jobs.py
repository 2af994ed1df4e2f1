"""The job manager: from a prompt to a verified image, every step written down first.

It knows nothing of Discord. It submits jobs, polls all pending jobs from one
scheduler (a heap of due times, not a sleeping task per job, so a thousand
pending jobs cost a heap entry each), downloads the result, and tells its
subscribers what happened. The store is the truth: each state is committed
before the request or event that follows it, so a process killed anywhere
resumes from the last written state and never pays for a job twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import itertools
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from bot.events import JobCancelled, JobCompleted, JobEvent, JobFailed, JobQueued, JobRunning, Subscriber
from bot.model_spec import model_inputs
from bot.polling import AdaptivePolicy, PollPolicy
from bot.runcomfy import (
    RequestResult,
    RunComfyClient,
    RunComfyError,
    SubmitOutcomeUnknownError,
    UpstreamState,
)
from bot.settings import Settings
from storage.base import JobStore
from storage.models import Job, JobState, NewJob, Timing

log = logging.getLogger(__name__)

RESTARTED_WHILE_SUBMITTING = (
    "The bot restarted while sending this job to RunComfy. It may have been created there, "
    "so it was not sent again (that could charge twice). Please try again."
)
NO_IMAGE = "RunComfy finished the job but sent back no image. Please try again."
# `delivery` of a failed or cancelled job once every subscriber has shown it; still NULL after a restart means
# the process died between writing the final state and showing it, so the next start shows it again.
NOTIFIED = "notified"
# A submit RunComfy refused before creating anything (429, 408, no connection) is tried this many more times.
SUBMIT_RETRIES = 3
ANNOUNCE_WINDOW = timedelta(days=1)  # final states older than this are not shown again after a restart


def utcnow() -> datetime:
    return datetime.now(UTC)


def _request_id(job: Job) -> str:
    """RunComfy's id of a job past `submitting` (written in the same update as that state)."""
    if job.request_id is None:
        raise RuntimeError(f"job {job.id} is {job.state} without a request id")
    return job.request_id


class CancelOutcome(StrEnum):
    CANCELLED = "cancelled"
    TOO_LATE = "too_late"  # already generating upstream: it runs on and is billed
    ALREADY_FINISHED = "already_finished"
    UNKNOWN_JOB = "unknown_job"


class JobManager:
    """Runs jobs against RunComfy and reports their events; one per process."""

    def __init__(
        self,
        client: RunComfyClient,
        store: JobStore,
        *,
        model: str,
        policy: PollPolicy | None = None,
        job_timeout: float = 900.0,
        unknown_state_timeout: float = 120.0,
        max_concurrent_polls: int = 32,
        retry_cap: float = 30.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.client = client
        self.store = store
        self.model = model
        self.policy: PollPolicy = policy or AdaptivePolicy()
        self.job_timeout = job_timeout
        self.unknown_state_timeout = unknown_state_timeout
        self.retry_cap = retry_cap
        self.clock = clock
        self._subscribers: list[Subscriber] = []
        self._heap: list[tuple[float, int, int]] = []
        self._due: dict[int, float] = {}
        self._seq = itertools.count()
        self._waiter: asyncio.Future[None] | None = None
        self._slots = asyncio.Semaphore(max_concurrent_polls)
        self._tasks: set[asyncio.Task[None]] = set()
        self._locks: dict[int, asyncio.Lock] = {}
        self._strikes: dict[int, int] = {}
        self._unknown_since: dict[int, datetime] = {}
        self._scheduler: asyncio.Task[None] | None = None
        self._announcements: set[asyncio.Task[None]] = set()

    @classmethod
    def from_settings(cls, client: RunComfyClient, store: JobStore, settings: Settings) -> JobManager:
        policy = AdaptivePolicy(
            min_interval=settings.poll_min_interval_seconds, max_interval=settings.poll_max_interval_seconds
        )
        return cls(
            client,
            store,
            model=settings.runcomfy_model,
            policy=policy,
            job_timeout=settings.job_timeout_seconds,
            unknown_state_timeout=settings.unknown_state_timeout_seconds,
        )

    # -- lifecycle -------------------------------------------------------

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Receive every job event; returns the function that unsubscribes."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)

    async def start(self, resume: Callable[[Job], bool] = lambda job: True) -> int:
        """Learn from finished jobs, pick up every unfinished job `resume` accepts, start polling.

        Returns how many jobs were resumed. A job found in `submitting` may exist
        upstream: it is failed with a clear message, never sent again. Final
        states the last process wrote but never showed are shown now. Both
        announcements run in the background, so they never hold up the start.
        """
        if isinstance(self.policy, AdaptivePolicy):
            self.policy.learn_all(await self.store.recent_timings(self.model, limit=200))
        resumed = 0
        now = self.clock()
        for job in await self.store.unfinished():
            if not resume(job) or job.state is JobState.WAITING:
                continue  # a waiting job was never sent; its server's line (cogs/lines.py) starts it
            resumed += 1
            if job.state is JobState.SUBMITTING:
                failed = await self._finish(job, JobState.FAILED, error=RESTARTED_WHILE_SUBMITTING)
                # The event keeps the token the row had (the disk copy is gone): if the process died before the
                # reply's message id was written, the token is the only way to that reply.
                self._announce(JobFailed(dataclasses.replace(failed, origin=job.origin), failed.error or "", True))
            else:
                due = job.next_poll_at or now
                self._schedule(job.id, max((due - now).total_seconds(), 0.0))
        for job in await self.store.unannounced(since=now - ANNOUNCE_WINDOW):
            if resume(job):
                final = JobCancelled(job) if job.state is JobState.CANCELLED else JobFailed(job, job.error or "", True)
                self._announce(final)
        self._scheduler = asyncio.create_task(self._run_scheduler(), name="job-scheduler")
        log.info("job manager started, %d unfinished jobs resumed", resumed)
        return resumed

    async def stop(self, grace: float = 10.0) -> None:
        """Stop polling; in-flight steps get `grace` seconds to finish their database write, then are cancelled."""
        if self._scheduler is not None:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler
            self._scheduler = None
        busy = self._tasks | self._announcements
        if busy:
            await asyncio.wait(busy, timeout=grace)
        for task in busy:
            task.cancel()

    @property
    def pending(self) -> int:
        """Jobs the scheduler is waiting on."""
        return len(self._due) + len(self._tasks)

    @property
    def alive(self) -> bool:
        return self._scheduler is not None and not self._scheduler.done()

    # -- what callers ask for --------------------------------------------

    async def submit(self, new: NewJob) -> Job:
        """Create the job and send it: `create` then `send`."""
        return await self.send(await self.create(new))

    async def create(self, new: NewJob) -> Job:
        """Write the job in `submitting`, before anything leaves the bot.

        Separate from `send` so a caller can attach the job id to its own state
        (the Discord reply) before the first event about it can arrive.
        """
        job = await self.store.create(new, now=self.clock())
        log.debug("job %d submitting", job.id, extra={"job_id": job.id})
        return job

    async def send(self, job: Job) -> Job:
        """Send a created job to RunComfy exactly once; returns it queued, or failed with the event sent.

        A submit whose answer was lost is never repeated (it may have created a
        billed job). One RunComfy refused outright (429, 408) or that never left
        this machine created nothing, so it is tried again, a few times.
        """
        inputs = model_inputs(job.prompt, job.aspect_ratio, job.seed)
        for attempt in itertools.count(1):
            try:
                submitted = await self.client.submit(inputs)
            except SubmitOutcomeUnknownError as error:
                log.warning("job %d: submit outcome unknown (%s); not resent", job.id, type(error).__name__)
                return await self._fail(job, error.user_message, retryable=False)
            except RunComfyError as error:
                if not error.retryable or attempt > SUBMIT_RETRIES:
                    return await self._fail(job, error.user_message, retryable=error.retryable)
                delay = min(self.retry_cap, max(error.retry_after or 0.0, 0.5 * 2**attempt))
                log.warning("job %d: submit refused (%s), again in %.1fs", job.id, error.status, delay)
                await asyncio.sleep(delay)
            else:
                break
        job = await self.store.transition(job.id, JobState.IN_QUEUE, now=self.clock(), request_id=submitted.request_id)
        log.info("job %d queued as %s", job.id, submitted.request_id, extra={"job_id": job.id})
        await self._emit(JobQueued(job, None))
        self._schedule(job.id, self.policy.delay(job, self.clock()))
        return job

    async def cancel(self, job_id: int) -> CancelOutcome:
        """Cancel a queued job upstream; a running one cannot be (RunComfy's rule) and is billed."""
        async with self._lock(job_id):
            job = await self.store.get(job_id)
            if job is None:
                return CancelOutcome.UNKNOWN_JOB
            if job.state.is_final or job.state is JobState.COMPLETED:
                return CancelOutcome.ALREADY_FINISHED
            if job.state is not JobState.IN_QUEUE or job.request_id is None:
                return CancelOutcome.TOO_LATE
            answer = await self.client.cancel(job.request_id)
            if not answer.cancelled:
                log.info("job %d: cancel refused upstream (%s)", job.id, answer.outcome, extra={"job_id": job.id})
                return CancelOutcome.TOO_LATE
            job = await self._finish(job, JobState.CANCELLED)
        await self._emit(JobCancelled(job))
        return CancelOutcome.CANCELLED

    async def mark_delivered(self, job_id: int, how: str) -> Job:
        """The subscriber put the image where it belongs; the job is done."""
        job = await self.store.transition(
            job_id, JobState.DELIVERED, now=self.clock(), delivery=how, interaction_token=None
        )
        log.debug("job %d delivered (%s)", job_id, how, extra={"job_id": job_id})
        return job

    async def mark_undeliverable(self, job_id: int, reason: str) -> Job:
        """The image was made but has nowhere to go (reply or channel deleted): record it, stop trying."""
        job = await self.store.transition(
            job_id, JobState.FAILED, now=self.clock(), delivery="undeliverable", error=reason, interaction_token=None
        )
        log.warning("job %d undeliverable: %s", job_id, reason, extra={"job_id": job_id})
        return job

    def eta(self, job: Job) -> datetime | None:
        return self.policy.expected_finish(job)

    # -- the scheduler ----------------------------------------------------

    def _schedule(self, job_id: int, delay: float) -> None:
        due = asyncio.get_running_loop().time() + delay
        self._due[job_id] = due
        heapq.heappush(self._heap, (due, next(self._seq), job_id))
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _run_scheduler(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while self._heap and self._heap[0][0] <= loop.time():
                due, _, job_id = heapq.heappop(self._heap)
                if self._due.get(job_id) != due:
                    continue  # superseded by a later schedule
                del self._due[job_id]
                await self._slots.acquire()
                task = asyncio.create_task(self._step(job_id), name=f"job-{job_id}")
                self._tasks.add(task)
                task.add_done_callback(self._step_done)
            # Sleep until the earliest due time or a new schedule, whichever comes first. A bare
            # future (not wait_for, which can swallow a cancel on 3.11) keeps stop() reliable.
            self._waiter = loop.create_future()
            timer = loop.call_at(self._heap[0][0], self._wake) if self._heap else None
            try:
                await self._waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()

    def _step_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    async def _step(self, job_id: int) -> None:
        async with self._lock(job_id):
            job = await self.store.get(job_id)
            if job is None or job.state.is_final or job.state is JobState.SUBMITTING:
                return
            try:
                await self._advance(job)
            except RunComfyError as error:
                if error.retryable and not self._timed_out(job):
                    self._retry_later(job, error.retry_after)
                else:
                    await self._fail(job, error.user_message, retryable=error.retryable)
            except Exception:
                # A bug or a database hiccup must not lose the job: log it and look again later.
                log.exception("job %d: unexpected error while polling", job_id, extra={"job_id": job_id})
                self._retry_later(job, None)

    async def _advance(self, job: Job) -> None:
        if self._timed_out(job):
            await self._give_up(job)
        elif job.state is JobState.IN_QUEUE:
            await self._poll_status(job)
        elif job.state is JobState.IN_PROGRESS:
            await self._poll_result(job)
        elif job.state is JobState.COMPLETED:
            await self._deliver_image(job)

    async def _poll_status(self, job: Job) -> None:
        status = await self.client.status(_request_id(job))
        self._strikes.pop(job.id, None)
        state = status.state
        if state is UpstreamState.QUEUED:
            now = self.clock()
            if status.queue_position is not None:
                self.policy.observe_position(job.id, status.queue_position, now)
            if status.queue_position != job.queue_position:
                job = await self.store.update(job.id, now=now, queue_position=status.queue_position)
                await self._emit(JobQueued(job, status.queue_position))
            await self._reschedule(job)
        elif state is UpstreamState.RUNNING:
            await self._started(job)
        elif state in (UpstreamState.FINISHED, UpstreamState.SUCCEEDED, UpstreamState.FAILED):
            await self._poll_result(job)
        elif state is UpstreamState.CANCELLED:
            await self._emit(JobCancelled(await self._finish(job, JobState.CANCELLED)))
        else:
            await self._unknown_state(job, status.status)

    async def _poll_result(self, job: Job) -> None:
        result = await self.client.result(_request_id(job), include_cost=True)
        self._strikes.pop(job.id, None)
        state = result.state
        failure = result.failure()
        if failure is not None:
            log.info("job %d failed upstream: %s", job.id, failure, extra={"job_id": job.id})
            await self._fail(job, failure.user_message, retryable=failure.retryable)
        elif state is UpstreamState.SUCCEEDED or (state is UpstreamState.FINISHED and result.image_urls):
            await self._completed(job, result)
        elif state is UpstreamState.RUNNING and job.state is JobState.IN_QUEUE:
            await self._started(job)
        elif state in (UpstreamState.QUEUED, UpstreamState.RUNNING):
            await self._reschedule(job)
        elif state is UpstreamState.CANCELLED:
            await self._emit(JobCancelled(await self._finish(job, JobState.CANCELLED)))
        else:
            # `completed` with no output yet, or a state nobody documented: look again, for a bounded time.
            await self._unknown_state(job, result.status)

    async def _started(self, job: Job) -> None:
        job = await self.store.transition(job.id, JobState.IN_PROGRESS, now=self.clock(), queue_position=None)
        self.policy.forget(job.id)
        log.debug("job %d in progress", job.id, extra={"job_id": job.id})
        await self._emit(JobRunning(job, self.eta(job)))
        await self._reschedule(job)

    async def _completed(self, job: Job, result: RequestResult) -> None:
        urls = result.image_urls
        if not urls:
            await self._fail(job, NO_IMAGE, retryable=True)
            return
        job = await self.store.transition(
            job.id, JobState.COMPLETED, now=self.clock(), result_url=urls[0], cost_usd=result.cost_usd
        )
        log.debug("job %d completed upstream", job.id, extra={"job_id": job.id})
        if job.queued_at and job.started_at and job.completed_at:
            self.policy.learn(
                Timing(
                    queue_seconds=(job.started_at - job.queued_at).total_seconds(),
                    run_seconds=(job.completed_at - job.started_at).total_seconds(),
                )
            )
        self._unknown_since.pop(job.id, None)
        self.policy.forget(job.id)  # a job seen going straight from queued to done leaves no queue progress behind
        await self._deliver_image(job)

    async def _deliver_image(self, job: Job) -> None:
        if job.result_url is None:
            raise RuntimeError(f"job {job.id} is completed without a result URL")
        image = await self.client.download_image(job.result_url)
        self._strikes.pop(job.id, None)
        await self._emit(JobCompleted(job, image))

    async def _unknown_state(self, job: Job, raw: str | None) -> None:
        now = self.clock()
        since = self._unknown_since.setdefault(job.id, now)
        if (now - since).total_seconds() > self.unknown_state_timeout:
            log.warning("job %d: state %r for too long", job.id, raw, extra={"job_id": job.id})
            await self._fail(job, "RunComfy stopped reporting a usable state for this job. Please try again.", True)
        else:
            await self._reschedule(job)

    async def _give_up(self, job: Job) -> None:
        minutes = round(self.job_timeout / 60)
        if job.state is JobState.IN_QUEUE and job.request_id is not None:
            with contextlib.suppress(RunComfyError):
                await self.client.cancel(job.request_id)
        await self._fail(job, f"The image took longer than {minutes} minutes, so the bot gave up on it.", True)

    async def _reschedule(self, job: Job) -> None:
        now = self.clock()
        delay = self.policy.delay(job, now)
        await self.store.update(
            job.id, now=now, next_poll_at=now + timedelta(seconds=delay), poll_count=job.poll_count + 1
        )
        self._schedule(job.id, delay)

    def _retry_later(self, job: Job, retry_after: float | None) -> None:
        strikes = self._strikes[job.id] = self._strikes.get(job.id, 0) + 1
        delay = min(self.retry_cap, 0.5 * 2**strikes)
        if retry_after is not None:
            delay = max(delay, retry_after)
        log.warning("job %d: RunComfy unavailable, next look in %.1fs", job.id, delay, extra={"job_id": job.id})
        self._schedule(job.id, delay)

    def _timed_out(self, job: Job) -> bool:
        return (self.clock() - job.created_at).total_seconds() > self.job_timeout

    async def _finish(self, job: Job, state: JobState, **fields: Any) -> Job:
        """Write a final state, dropping the interaction token (a secret nobody needs any more)."""
        job = await self.store.transition(job.id, state, now=self.clock(), interaction_token=None, **fields)
        self.policy.forget(job.id)
        self._due.pop(job.id, None)
        self._locks.pop(job.id, None)
        self._strikes.pop(job.id, None)
        self._unknown_since.pop(job.id, None)
        log.debug("job %d %s", job.id, state.value, extra={"job_id": job.id})
        return job

    async def _fail(self, job: Job, reason: str, retryable: bool) -> Job:
        job = await self._finish(job, JobState.FAILED, error=reason)
        await self._emit(JobFailed(job, reason, retryable))
        return job

    async def _emit(self, event: JobEvent) -> None:
        for subscriber in list(self._subscribers):
            try:
                await subscriber(event)
            except Exception:
                log.exception("job %d: a subscriber failed on %s", event.job.id, type(event).__name__)
        if isinstance(event, JobFailed | JobCancelled):
            await self._notified(event.job)

    async def _notified(self, job: Job) -> None:
        """Every subscriber has shown the final state: a restart need not show it again."""
        try:
            await self.store.update(job.id, now=self.clock(), delivery=NOTIFIED, interaction_token=None)
        except Exception:
            log.exception("job %d: could not record that its end was shown", job.id, extra={"job_id": job.id})

    def _announce(self, event: JobFailed | JobCancelled) -> None:
        task = asyncio.create_task(self._emit(event), name=f"announce-{event.job.id}")
        self._announcements.add(task)
        task.add_done_callback(self._announcements.discard)

    def _lock(self, job_id: int) -> asyncio.Lock:
        return self._locks.setdefault(job_id, asyncio.Lock())
