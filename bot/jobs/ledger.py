"""The one place a job's state is written: compare-and-set, then exactly one event.

Every worker of the job manager (the line, the poller, the delivery stage)
moves jobs through this object, so three rules hold everywhere: a write names
the state it expects and reports whether it happened (the loser of a race, or
a step acting on a stale row, changes nothing); a write that happened is told
to every listener exactly once; and nothing outside `bot/jobs/` writes a job.

When processes share the database (PostgreSQL), the ledger has an `owner`
(this process): a job is created holding its lease, and every write about a
live job names the owner, so a process that lost a job to another (its lease
ran out) changes nothing. Facts any process may record (a reply was deleted,
a finished job's message was removed) are written with `owned=False`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from datetime import datetime, timedelta
from typing import Any

from bot.clock import Clock
from bot.jobs.events import JobCancelled, JobEvent, JobFailed, Listener
from bot.runcomfy import ModerationError, RunComfyError
from storage.base import JobStore
from storage.models import FailureKind, Job, JobState, Lease, NewJob

log = logging.getLogger(__name__)

Expect = JobState | Collection[JobState]


class Ledger:
    def __init__(
        self, store: JobStore, clock: Clock, *, owner: str | None = None, lease: timedelta = timedelta(seconds=30)
    ) -> None:
        """`owner`: this process's name when processes share the store (leases on); None for one process."""
        self.store = store
        self.clock = clock
        self.owner = owner
        self.lease_time = lease
        self._listeners: list[Listener] = []

    def mine(self, job: Job) -> bool:
        """Whether this process may change `job` (always, without leases)."""
        return self.owner is None or job.lease_owner == self.owner

    def lease(self) -> Lease | None:
        """A fresh lease for this process (None without leases)."""
        return None if self.owner is None else Lease(self.owner, self.clock.now() + self.lease_time)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Hear every event; returns the function that stops that."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    def emit(self, event: JobEvent) -> None:
        """Tell every listener; one failing listener neither stops the others nor the write that caused it."""
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("job %d: a listener failed on %s", event.job.id, type(event).__name__)

    async def create(self, new: NewJob, *, state: JobState, post_nonce: str | None, event: Event) -> Job:
        job = await self.store.create(new, now=self.clock.now(), state=state, post_nonce=post_nonce, lease=self.lease())
        self.emit(event(job))
        return job

    async def move(
        self, job_id: int, to: JobState, *, expect: Expect, event: Event | None, **fields: Any
    ) -> Job | None:
        """Move the job to `to` if it is in an expected state; the job as written, or None if it was not.

        `event` builds the one event of this transition from the written row;
        None only for moves nobody needs to hear of (none today outside tests).
        """
        job = await self.store.transition(job_id, to, expect=expect, now=self.clock.now(), owner=self.owner, **fields)
        if job is None:
            log.debug("job %d: not moved to %s (no longer %s)", job_id, to.value, _names(expect))
            return None
        if event is not None:
            self.emit(event(job))
        return job

    async def note(
        self, job_id: int, *, expect: Expect | None, event: Event | None = None, owned: bool = True, **fields: Any
    ) -> Job | None:
        """Write fields that are not the state (a queue position, a message id, the next delivery attempt), only
        while the job is in an expected state (and held by this process, unless `owned` is False: a fact any
        process may record); an event when something must hear of it."""
        owner = self.owner if owned else None
        job = await self.store.update(job_id, now=self.clock.now(), expect=expect, owner=owner, **fields)
        if job is not None and event is not None:
            self.emit(event(job))
        return job

    # -- endings shared by every stage ----------------------------------------------

    async def fail(
        self,
        job: Job,
        error: RunComfyError | str,
        *,
        expect: Expect,
        kind: FailureKind | None = None,
        notify: bool = True,
    ) -> Job | None:
        """End the job without an image: the member's sentence on the row, the operator's detail in the event, and
        the notice owed to the member when the job has somewhere to show it (`notify` False: nobody to tell)."""
        if isinstance(error, RunComfyError):
            reason, detail, kind = error.user_message, error.for_operator(), kind or failure_kind(error)
            log.info("job %d failed: %s", job.id, detail, extra={"job_id": job.id})
        else:
            reason, detail, kind = error, None, kind or FailureKind.RETRYABLE
        return await self.move(
            job.id,
            JobState.FAILED,
            expect=expect,
            event=lambda row: JobFailed(row, reason, kind, detail),
            error=reason,
            failure_kind=kind,
            next_poll_at=None,
            deliver_at=self.notice_time(job, notify),
        )

    async def cancel(self, job: Job, reason: str | None, *, expect: Expect, notify: bool = True) -> Job | None:
        return await self.move(
            job.id,
            JobState.CANCELLED,
            expect=expect,
            event=lambda row: JobCancelled(row, reason),
            error=reason,
            next_poll_at=None,
            deliver_at=self.notice_time(job, notify),
        )

    def notice_time(self, job: Job, notify: bool = True) -> datetime | None:
        """When the end of a job is to be shown: now, if there is someone to tell and a place to show it (the
        CLI's jobs have none: it hears the event)."""
        return self.clock.now() if notify and job.origin.channel_id is not None and job.deleted_at is None else None


Event = Callable[[Job], JobEvent]


def failure_kind(error: RunComfyError) -> FailureKind:
    if isinstance(error, ModerationError):
        return FailureKind.REFUSED
    return FailureKind.RETRYABLE if error.retryable else FailureKind.FINAL


def _names(expect: Expect) -> str:
    states = [expect] if isinstance(expect, JobState) else list(expect)
    return "/".join(state.value for state in states)
