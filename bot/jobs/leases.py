"""`LeaseKeeper`: this process's hold on its jobs when several processes share one PostgreSQL database.

Every live job has a holder (storage/postgres/leases.py). The keeper:

* renews this process's leases every third of the lease time, so they never
  run out while it is alive, even when a renewal or two fails;
* takes over orphans: it sleeps until the next lease of another process runs
  out (or until told that jobs were given up), then claims what is free and
  hands each job to the manager to resume as after a restart. A process that
  died is replaced within the lease time plus a moment: no poll interval is
  added on top, since the keeper knows when the next lease ends;
* carries requests to the holder of a job: a member cancels, or deletes the
  reply, in a server whose events reach this process while another process
  holds the job. The holder acts and, for a cancel, answers; a job whose lease
  ran out is claimed here and handled here instead;
* at a clean stop, gives its leases up and says so, so the others take the
  jobs at once instead of waiting for the leases to run out.

Messages travel as JSON over LISTEN/NOTIFY (`JobLeases.publish`): they are
wake-ups and requests, never the truth; the jobs table is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from bot.clock import Clock
from storage.base import JobLeases
from storage.models import Job
from storage.sqlite_common import StoreUnavailableError

log = logging.getLogger(__name__)

SCAN_BATCH = 100  # orphans claimed per statement; a larger backlog is claimed batch after batch
MARGIN = timedelta(milliseconds=200)  # after a lease runs out, before claiming: clocks of hosts differ a little
ASK_TIMEOUT = 5.0  # seconds to wait for the holder's answer to a forwarded cancel

Resume = Callable[[Job], Awaitable[None]]
Request = Callable[[Job, dict[str, Any]], Awaitable[str | None]]


class LeaseKeeper:
    """Renews, takes over, forwards; see the module docstring. One per job manager, when the store has leases."""

    def __init__(
        self,
        leases: JobLeases,
        clock: Clock,
        owner: str,
        *,
        lease: timedelta,
        resume: Resume,
        request: Request,
        get: Callable[[int], Awaitable[Job | None]],
    ) -> None:
        """`resume(job)` picks up a claimed job; `request(job, message)` carries out a forwarded request on a job
        this process holds and returns the answer (or None); `get(job_id)` reads a job."""
        self.leases = leases
        self.clock = clock
        self.owner = owner
        self.lease = lease
        self._resume = resume
        self._request = request
        self._get = get
        self._wake = asyncio.Event()
        self._answers: dict[str, asyncio.Future[str]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._handling: set[asyncio.Task[None]] = set()
        self._stop_jump: Callable[[], None] | None = None
        self.taken_over = 0  # jobs claimed from other processes since the start (metrics and tests)

    @property
    def renew_every(self) -> float:
        return self.lease.total_seconds() / 3

    def until(self) -> datetime:
        return self.clock.now() + self.lease

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Listen, then start renewing and watching for orphans."""
        await self.leases.subscribe(self._heard)
        self._stop_jump = self.clock.on_jump(self._wake.set)
        self._tasks = [
            asyncio.create_task(self._renew_forever(), name="lease-renewal"),
            asyncio.create_task(self._take_over_forever(), name="lease-take-over"),
        ]

    async def stop(self) -> None:
        """Stop renewing and scanning; give every lease up and tell the other processes to look now."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._stop_jump is not None:
            self._stop_jump()
        for task in list(self._handling):
            task.cancel()
        await asyncio.gather(*self._handling, return_exceptions=True)
        try:
            released = await self.leases.release(self.owner)
            if released:
                await self.leases.publish(json.dumps({"op": "scan"}))
                log.info("gave up %d jobs to the other processes", released)
        except StoreUnavailableError as error:
            log.warning("leases not given up (%s): other processes take the jobs when they run out", error.reason)

    # -- renewing ----------------------------------------------------------------------

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.renew_every)
            await self.renew()

    async def renew(self) -> None:
        try:
            await self.leases.renew(self.owner, until=self.until())
        except StoreUnavailableError as error:
            log.warning("leases not renewed (%s); trying again in %.0f s", error.reason, self.renew_every)

    # -- taking over ----------------------------------------------------------------------

    async def _take_over_forever(self) -> None:
        while True:
            try:
                await self.take_over()
                wait = await self._until_next_expiry()
            except StoreUnavailableError as error:
                log.warning("orphaned jobs not looked for (%s)", error.reason)
                wait = self.renew_every
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    async def _until_next_expiry(self) -> float:
        """Seconds until the next lease of another process runs out (plus a margin), at most one lease."""
        expiry = await self.leases.next_expiry(self.owner)
        if expiry is None:
            return self.lease.total_seconds()
        wait = (expiry + MARGIN - self.clock.now()).total_seconds()
        return min(max(wait, 0.0), self.lease.total_seconds())

    async def take_over(self) -> int:
        """Claim every orphan, batch by batch, resuming each; how many were claimed."""
        claimed_total = 0
        while True:
            now = self.clock.now()
            orphans = await self.leases.orphans(now=now, limit=SCAN_BATCH)
            claimed = await self.leases.claim([job.id for job in orphans], self.owner, until=now + self.lease, now=now)
            for job in claimed:
                log.info(
                    "took over job %d (%s, held by %s until %s)",
                    job.id,
                    job.state.value,
                    _holder(orphans, job.id),
                    _when(orphans, job.id),
                    extra={"job_id": job.id},
                )
                await self._resume(job)
            claimed_total += len(claimed)
            if len(orphans) < SCAN_BATCH or not claimed:
                self.taken_over += claimed_total
                return claimed_total

    # -- requests to a job's holder ---------------------------------------------------------

    async def ask(self, job: Job, op: str, **fields: Any) -> str | None:
        """Have the holder of `job` do `op` (e.g. "cancel"); its answer, or None when nobody answered in time.

        A job whose lease ran out is claimed first and handled here.
        """
        now = self.clock.now()
        if job.lease_until is None or job.lease_until < now:
            for mine in await self.leases.claim([job.id], self.owner, until=now + self.lease, now=now):
                await self._resume(mine)
                return await self._request(mine, {"op": op, **fields})
        token = secrets.token_hex(8)
        answer = self._answers[token] = asyncio.get_running_loop().create_future()
        try:
            await self.leases.publish(
                json.dumps({"op": op, "job": job.id, "to": job.lease_owner, "ask": token, **fields})
            )
            return await asyncio.wait_for(answer, ASK_TIMEOUT)
        except TimeoutError:
            log.warning("job %d: %s asked of %s, no answer", job.id, op, job.lease_owner, extra={"job_id": job.id})
            return None
        finally:
            self._answers.pop(token, None)

    async def tell(self, job: Job, op: str, **fields: Any) -> None:
        """Tell the holder of `job` something that needs no answer (its reply was deleted)."""
        await self.leases.publish(json.dumps({"op": op, "job": job.id, "to": job.lease_owner, **fields}))

    def _heard(self, payload: str) -> None:
        try:
            message = json.loads(payload)
        except ValueError:
            log.warning("ignored a notification that is not JSON")
            return
        if not isinstance(message, dict):
            return
        op = message.get("op")
        if op == "scan":
            self._wake.set()
        elif op == "answer":
            future = self._answers.get(str(message.get("ask")))
            if future is not None and not future.done():
                future.set_result(str(message.get("outcome")))
        elif message.get("to") == self.owner and isinstance(message.get("job"), int):
            task = asyncio.create_task(self._handle(message), name=f"request-{message['job']}")
            self._handling.add(task)
            task.add_done_callback(self._handling.discard)

    async def _handle(self, message: dict[str, Any]) -> None:
        try:
            job = await self._get(message["job"])
            if job is None or job.lease_owner != self.owner:
                return  # it moved on; the asker times out or finds the new holder next time
            outcome = await self._request(job, message)
            if outcome is not None and "ask" in message:
                await self.leases.publish(json.dumps({"op": "answer", "ask": message["ask"], "outcome": outcome}))
        except Exception:
            log.exception("job %s: a request from another process failed", message.get("job"))


def _holder(orphans: list[Job], job_id: int) -> str:
    return next((job.lease_owner or "nobody" for job in orphans if job.id == job_id), "?")


def _when(orphans: list[Job], job_id: int) -> str:
    until = next((job.lease_until for job in orphans if job.id == job_id), None)
    return until.isoformat(timespec="seconds") if until else "-"
