"""RunComfy's side of a job: send it exactly once, poll it, and never throw away what is paid for.

A poll step only talks to RunComfy and writes the answer: it never downloads
the image and never waits on Discord (delivery is a stage of its own), so a
slow channel cannot delay the polling of every other server.

Deadlines count from the submit (`queued_at`), not from entering the server's
line. Past the deadline the job gets one last look before anything is given
up: a job RunComfy finished is delivered whatever its age; one still queued is
cancelled there (and only called cancelled when RunComfy says so); one that
already runs cannot be cancelled and is billed, so it is waited for, slowly,
until RunComfy ends it or `ABANDON_AFTER` has passed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from enum import StrEnum

from bot.clock import Clock
from bot.jobs.events import JobCompleted, JobQueued, JobRunning
from bot.jobs.ledger import Ledger
from bot.jobs.worker import Worker
from bot.model_registry import ModelRegistry, build_request
from bot.polling import PollPolicy
from bot.runcomfy import (
    BalanceError,
    RequestResult,
    RunComfyClient,
    RunComfyError,
    SubmitOutcomeUnknownError,
    UpstreamState,
)
from storage.models import FailureKind, Job, JobState, Timing
from storage.sqlite_common import StoreUnavailableError

log = logging.getLogger(__name__)

RESTARTED_WHILE_SUBMITTING = (
    "The bot restarted while sending this job to RunComfy. It may have been created there, "
    "so it was not sent again (that could charge twice). Please try again."
)
NO_IMAGE = "RunComfy finished the job but sent back no image. Please try again."
INPUT_EXPIRED = (
    "The link to the image this edit starts from has expired (Discord's links last about a day), so it was not "
    "sent: RunComfy could not have read it. Nothing was charged; use Edit image on the picture again."
)
MODEL_GONE = "The model {model} is no longer offered by this bot, so the job was not sent. Nothing was charged."
# An input URL is sent only while it lives at least this long: RunComfy fetches it after the submit, maybe later.
INPUT_MARGIN = timedelta(minutes=10)
LOST_STATE = "RunComfy stopped reporting a usable state for this job. Please try again."
# A submit RunComfy refused before creating anything (429, 408, no connection) is tried this many more times.
SUBMIT_RETRIES = 3
# A job that runs upstream past its deadline is billed: it is waited for this long before the bot stops asking.
ABANDON_AFTER = timedelta(hours=6)
OVERDUE_POLL_SECONDS = 30.0


class CancelOutcome(StrEnum):
    CANCELLED = "cancelled"
    TOO_LATE = "too_late"  # already generating upstream: it runs on and is billed
    ALREADY_FINISHED = "already_finished"
    UNKNOWN_JOB = "unknown_job"
    UNREACHABLE = "unreachable"  # another process holds the job and did not answer in time


class Upstream:
    def __init__(
        self,
        ledger: Ledger,
        client: RunComfyClient,
        clock: Clock,
        *,
        registry: ModelRegistry,
        policy: PollPolicy,
        job_timeout: float,
        unknown_state_timeout: float,
        retry_cap: float = 30.0,
        concurrency: int = 32,
    ) -> None:
        self.ledger = ledger
        self.client = client
        self.clock = clock
        self.registry = registry
        self.policy = policy
        self.job_timeout = timedelta(seconds=job_timeout)
        self.unknown_state_timeout = unknown_state_timeout
        self.retry_cap = retry_cap
        self.worker = Worker("poll", clock, self.step, concurrency=concurrency)
        # What a submit refused for want of credit does to its job: the manager hands in the line's pause.
        self.no_credit: Callable[[Job, RunComfyError], Awaitable[object]] = self._fail_no_credit
        self._strikes: dict[int, int] = {}
        self._unknown_since: dict[int, datetime] = {}
        self._overdue: set[int] = set()
        self._member_cancels: set[int] = set()  # jobs a member's cancel is on its way to RunComfy for

    # -- sending ---------------------------------------------------------------

    async def send(self, job: Job) -> Job:
        """Send a job in `submitting` to RunComfy exactly once: queued, or failed (with its event).

        A submit whose answer was lost is never repeated (it may have created a
        billed job). One RunComfy refused outright (429, 408) or that never left
        this machine created nothing, so it is tried again, a few times.
        """
        model = self.registry.get(job.model)
        if model is None:
            return (
                await self.fail(job, MODEL_GONE.format(model=job.model), kind=FailureKind.FINAL, expect=job.state)
                or job
            )
        if model.edits and (
            job.input_url is None
            or (job.input_expires_at is not None and job.input_expires_at - INPUT_MARGIN <= self.clock.now())
        ):
            log.info("job %d: its input URL expired; not sent", job.id, extra={"job_id": job.id})
            return await self.fail(job, INPUT_EXPIRED, kind=FailureKind.FINAL, expect=job.state) or job
        inputs = build_request(
            model,
            prompt=job.prompt,
            ratio=job.aspect_ratio or None,
            seed=job.seed,
            count=job.count,
            image_url=job.input_url,
        )
        for attempt in itertools.count(1):
            if self.ledger.owner is not None and await self.ledger.note(job.id, expect=JobState.SUBMITTING) is None:
                # Another process took the job over while this one waited (for the request budget, or a retry):
                # it failed the job as "may exist upstream", so nothing may be sent for it now.
                log.warning("job %d: no longer held here; not sent", job.id, extra={"job_id": job.id})
                return job
            try:
                submitted = await self.client.submit(inputs, model=model.id)
            except BalanceError as error:
                # Refused before anything was created: the job keeps its place until the credit is back.
                log.warning(
                    "job %d: RunComfy says the balance is exhausted (%s)", job.id, error, extra={"job_id": job.id}
                )
                await self.no_credit(job, error)
                return job
            except SubmitOutcomeUnknownError as error:
                log.warning("job %d: submit outcome unknown (%s); not resent", job.id, error, extra={"job_id": job.id})
                return await self.fail(job, error, expect=JobState.SUBMITTING) or job
            except RunComfyError as error:
                if not error.retryable or attempt > SUBMIT_RETRIES:
                    return await self.fail(job, error, expect=JobState.SUBMITTING) or job
                delay = min(self.retry_cap, max(error.retry_after or 0.0, 0.5 * 2**attempt))
                log.warning("job %d: submit refused (%s), again in %.1fs", job.id, error, delay)
                await asyncio.sleep(delay)
            else:
                break
        queued = await self.ledger.move(
            job.id,
            JobState.IN_QUEUE,
            expect=JobState.SUBMITTING,
            event=lambda row: JobQueued(row, None),
            request_id=submitted.request_id,
        )
        if queued is None:
            await self._orphaned_request(job, submitted.request_id)
            return job
        log.info("job %d queued as %s", job.id, submitted.request_id, extra={"job_id": job.id})
        self._schedule(queued, self.policy.delay(queued, self.clock.now()))
        return queued

    async def _orphaned_request(self, job: Job, request_id: str) -> None:
        """RunComfy took the request, but the job is no longer this process's to record it (another process
        took it over while the submit was on its way, which only happens when this one stopped renewing its
        leases): cancel it upstream while it is queued, so nobody pays for an image nobody will deliver."""
        log.warning("job %d: submitted as %s but no longer held here; cancelling it", job.id, request_id)
        try:
            answer = await self.client.cancel(request_id)
        except RunComfyError as error:
            log.warning("job %d: cancelling %s failed: %s", job.id, request_id, error, extra={"job_id": job.id})
            return
        if not answer.cancelled:
            log.warning("job %d: %s could not be cancelled (%s)", job.id, request_id, answer.outcome)

    async def _fail_no_credit(self, job: Job, error: RunComfyError) -> None:
        await self.fail(job, error, expect=JobState.SUBMITTING)

    # -- polling -----------------------------------------------------------------

    def resume(self, job: Job) -> None:
        """Poll a job found in `in_queue` or `in_progress` at start, when it was due."""
        now = self.clock.now()
        self.worker.schedule(job.id, min(job.next_poll_at or now, now + timedelta(seconds=60)))

    async def step(self, job_id: int) -> None:
        job = await self.ledger.store.get(job_id)
        if job is None or not job.state.is_upstream_pending or not self.ledger.mine(job):
            self.forget(job_id)  # finished, or another process holds it now
            return
        try:
            if self.clock.now() > self._deadline(job):
                await self._past_deadline(job)
            elif job.state is JobState.IN_QUEUE:
                await self._poll_status(job)
            else:
                await self._poll_result(job)
        except RunComfyError as error:
            if error.retryable:
                self._retry_later(job, error)
            else:
                await self.fail(job, error, expect=job.state)
        except Exception:
            # A bug or a database hiccup must not lose the job: log it and look again later.
            log.exception("job %d: unexpected error while polling", job_id, extra={"job_id": job_id})
            self._retry_later(job, None)

    def _deadline(self, job: Job) -> datetime:
        return (job.queued_at or job.created_at) + self.job_timeout

    async def _poll_status(self, job: Job) -> None:
        status = await self.client.status(_request_id(job))
        self._strikes.pop(job.id, None)
        state = status.state
        if state is UpstreamState.QUEUED:
            now = self.clock.now()
            if status.queue_position is not None:
                self.policy.observe_position(job.id, status.queue_position, now)
                await self.save_queue_speed()
            if status.queue_position != job.queue_position:
                moved = await self.ledger.note(
                    job.id,
                    expect=JobState.IN_QUEUE,
                    event=lambda row: JobQueued(row, status.queue_position),
                    queue_position=status.queue_position,
                )
                job = moved or job
            await self._reschedule(job)
        elif state is UpstreamState.RUNNING:
            await self._started(job)
        elif state in (UpstreamState.FINISHED, UpstreamState.SUCCEEDED, UpstreamState.FAILED):
            await self._poll_result(job)
        elif state is UpstreamState.CANCELLED:
            await self._cancelled_upstream(job)
        else:
            await self._unknown_state(job, status.status)

    async def _poll_result(self, job: Job) -> None:
        result = await self.client.result(_request_id(job), include_cost=True)
        self._strikes.pop(job.id, None)
        state = result.state
        failure = result.failure()
        if failure is not None:
            log.info("job %d failed upstream: %s", job.id, failure, extra={"job_id": job.id})
            await self.fail(job, failure, expect=job.state)
        elif state is UpstreamState.SUCCEEDED or (state is UpstreamState.FINISHED and result.image_urls):
            await self._completed(job, result)
        elif state is UpstreamState.RUNNING and job.state is JobState.IN_QUEUE:
            await self._started(job)
        elif state in (UpstreamState.QUEUED, UpstreamState.RUNNING):
            await self._reschedule(job)
        elif state is UpstreamState.CANCELLED:
            await self._cancelled_upstream(job)
        else:
            # `completed` with no output yet, or a state nobody documented: look again, for a bounded time.
            await self._unknown_state(job, result.status)

    async def _started(self, job: Job) -> None:
        running = await self.ledger.move(
            job.id,
            JobState.IN_PROGRESS,
            expect=JobState.IN_QUEUE,
            event=lambda row: JobRunning(row, self.policy.expected_finish(row)),
            queue_position=None,
        )
        self.policy.forget(job.id)
        if running is not None:
            await self._reschedule(running)

    async def _completed(self, job: Job, result: RequestResult) -> None:
        # More images than the job asked (and was charged) for are not kept: the member asked for `count`.
        urls = result.image_urls[: job.count]
        if not urls:
            await self.fail(job, NO_IMAGE, kind=FailureKind.RETRYABLE, expect=job.state)
            return
        # RunComfy's own cost replaces the estimate written with the job; none keeps the estimate.
        cost: dict[str, object] = {}
        if result.cost_usd is not None:
            cost = {"cost_usd": result.cost_usd, "cost_estimated": False}
        made = await self.ledger.move(
            job.id,
            JobState.COMPLETED,
            expect=(JobState.IN_QUEUE, JobState.IN_PROGRESS),
            event=JobCompleted,
            result_url=urls[0],
            result_urls=json.dumps(urls),
            **cost,
            queue_position=None,
            next_poll_at=None,
            deliver_at=self.clock.now(),
        )
        self.forget(job.id)
        if made is None:
            return
        if made.queued_at and made.started_at and made.completed_at:
            self.policy.learn(
                Timing(
                    queue_seconds=(made.started_at - made.queued_at).total_seconds(),
                    run_seconds=(made.completed_at - made.started_at).total_seconds(),
                )
            )

    async def _past_deadline(self, job: Job) -> None:
        """One last look before giving up anything: deliver what is done, cancel what can be, wait for the rest."""
        status = await self.client.status(_request_id(job))
        self._strikes.pop(job.id, None)
        state = status.state
        if state in (UpstreamState.FINISHED, UpstreamState.SUCCEEDED, UpstreamState.FAILED):
            await self._poll_result(job)
        elif state is UpstreamState.CANCELLED:
            await self._cancelled_upstream(job)
        elif state is UpstreamState.QUEUED and job.id not in self._overdue:
            answer = await self.client.cancel(_request_id(job))
            if answer.cancelled:
                minutes = round(self.job_timeout.total_seconds() / 60)
                await self.cancelled(
                    job, f"It waited in the image service's queue for over {minutes} minutes, so it was cancelled."
                )
            else:
                log.info("job %d: overdue, cancel refused (%s)", job.id, answer.outcome, extra={"job_id": job.id})
                await self._wait_overdue(job)
        elif self.clock.now() > (job.queued_at or job.created_at) + ABANDON_AFTER:
            await self.fail(
                job,
                "RunComfy did not finish this image after hours of waiting, so the bot stopped asking.",
                kind=FailureKind.RETRYABLE,
                expect=job.state,
            )
        else:
            await self._wait_overdue(job)

    async def _wait_overdue(self, job: Job) -> None:
        """Past its deadline but running (billed): tell the member once, then look now and then."""
        if job.id not in self._overdue:
            self._overdue.add(job.id)
            self.ledger.emit(JobRunning(job, None, overdue=True))
        now = self.clock.now()
        await self.ledger.note(
            job.id,
            expect=job.state,
            next_poll_at=now + timedelta(seconds=OVERDUE_POLL_SECONDS),
            poll_count=job.poll_count + 1,
        )
        self._schedule(job, OVERDUE_POLL_SECONDS)

    async def _unknown_state(self, job: Job, raw: str | None) -> None:
        now = self.clock.now()
        since = self._unknown_since.setdefault(job.id, now)
        if (now - since).total_seconds() > self.unknown_state_timeout:
            log.warning("job %d: state %r for too long", job.id, raw, extra={"job_id": job.id})
            await self.fail(job, LOST_STATE, kind=FailureKind.RETRYABLE, expect=job.state)
        else:
            await self._reschedule(job)

    async def _reschedule(self, job: Job) -> None:
        now = self.clock.now()
        delay = self.policy.delay(job, now)
        await self.ledger.note(
            job.id, expect=job.state, next_poll_at=now + timedelta(seconds=delay), poll_count=job.poll_count + 1
        )
        self._schedule(job, delay)

    def _schedule(self, job: Job, delay: float) -> None:
        self.worker.schedule(job.id, self.clock.now() + timedelta(seconds=delay))

    def _retry_later(self, job: Job, error: RunComfyError | None) -> None:
        strikes = self._strikes[job.id] = self._strikes.get(job.id, 0) + 1
        delay = min(self.retry_cap, 0.5 * 2**strikes)
        if error is not None and error.retry_after is not None:
            delay = max(delay, error.retry_after)
        log.warning("job %d: RunComfy unavailable (%s), next look in %.1fs", job.id, error, delay)
        self._schedule(job, delay)

    # -- endings -------------------------------------------------------------------

    async def fail(
        self,
        job: Job,
        error: RunComfyError | str,
        *,
        expect: JobState | tuple[JobState, ...],
        kind: FailureKind | None = None,
    ) -> Job | None:
        failed = await self.ledger.fail(job, error, expect=expect, kind=kind)
        self.forget(job.id)
        return failed

    async def cancelled(self, job: Job, reason: str | None, *, expect: JobState | None = None) -> Job | None:
        done = await self.ledger.cancel(job, reason, expect=expect or job.state)
        self.forget(job.id)
        return done

    async def cancel(self, job: Job) -> CancelOutcome:
        """Cancel a queued job upstream; a running one cannot be (RunComfy's rule) and is billed."""
        if job.state.is_final or job.state in (JobState.COMPLETED, JobState.DELIVERING):
            return CancelOutcome.ALREADY_FINISHED
        if job.state is not JobState.IN_QUEUE or job.request_id is None:
            return CancelOutcome.TOO_LATE
        self._member_cancels.add(job.id)  # until the cancel is written, by this call or by the job's own poll
        try:
            answer = await self.client.cancel(job.request_id)
            if not answer.cancelled:
                log.info("job %d: cancel refused upstream (%s)", job.id, answer.outcome, extra={"job_id": job.id})
                return CancelOutcome.TOO_LATE
            done = await self.cancelled(job, None, expect=JobState.IN_QUEUE)
            if done is None:  # moved meanwhile: the job's own poll may have heard upstream's "cancelled" first
                done = await self.ledger.store.get(job.id)
        finally:
            self._member_cancels.discard(job.id)
        return (
            CancelOutcome.CANCELLED if done is not None and done.state is JobState.CANCELLED else CancelOutcome.TOO_LATE
        )

    async def _cancelled_upstream(self, job: Job) -> None:
        """RunComfy says the job was cancelled: by the member's own cancel on its way (the poll heard first; the
        member reads the usual words), or by RunComfy itself."""
        await self.cancelled(job, None if job.id in self._member_cancels else "RunComfy cancelled it.")

    def forget(self, job_id: int) -> None:
        self.worker.discard(job_id)
        self.policy.forget(job_id)
        self._strikes.pop(job_id, None)
        self._unknown_since.pop(job_id, None)
        self._overdue.discard(job_id)

    # -- the queue's speed, kept across restarts -------------------------------------

    async def recall_queue_speed(self) -> None:
        """Take back how fast RunComfy's queue moved before the restart (a hint: none is fine)."""
        try:
            saved = await self.ledger.store.polling.queue_speed(self.client.model)
        except StoreUnavailableError as error:
            log.info("queue speed not read back (%s): learned again from the next countdown", error.reason)
            return
        self.policy.recall_queue_speed(saved.seconds_per_position if saved else None)

    async def save_queue_speed(self, *, final: bool = False) -> None:
        """Keep the queue's speed when the policy says it moved enough to be worth a write (and at stop)."""
        now = self.clock.now()
        speed = self.policy.queue_speed_to_save(now, final=final)
        if speed is None:
            return
        try:
            await self.ledger.store.polling.save_queue_speed(self.client.model, speed, now=now)
        except StoreUnavailableError as error:
            log.info("queue speed not saved (%s)", error.reason)


def _request_id(job: Job) -> str:
    """RunComfy's id of a job past `submitting` (written in the same update as that state)."""
    if job.request_id is None:
        raise RuntimeError(f"job {job.id} is {job.state} without a request id")
    return job.request_id
