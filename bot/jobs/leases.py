"""`LeaseKeeper`: this process's hold on its jobs when several processes share one PostgreSQL database.

Every live job has a holder (storage/postgres/leases.py). The keeper:

* renews this process's leases every third of the lease time, counted from
  the last renewal that worked; a failed or slow one (each has a third of the
  lease at most) is tried again sooner, so the leases never run out while the
  process and its database connection are alive;
* takes over orphans: it sleeps until the next lease of another process runs
  out (or until told that jobs were given up), then claims what is free and
  hands each job to the manager to resume as after a restart. A process that
  died is replaced within the lease time plus a moment: no poll interval is
  added on top, since the keeper knows when the next lease ends;
* carries requests to the holder of a job: a member cancels, or deletes the
  reply, in a server whose events reach this process while another process
  holds the job. The holder acts and, for a cancel, answers; a job whose lease
  ran out is claimed here and handled here instead;
* tells the others when one of its jobs leaves a server's slot, so a job of
  that server another process holds can start at once;
* at a clean stop, first stops taking over, then (once the manager's workers
  and in-flight submits are done) gives its leases up and says so, so the
  others take the jobs at once instead of waiting for the leases to run out.

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
RETRY_FRACTION = 0.25  # of a renewal interval: how soon a failed renewal is tried again


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
        pump: Callable[[int], None],
    ) -> None:
        """`resume(job)` picks up a claimed job; `request(job, message)` carries out a forwarded request on a job
        this process holds and returns the answer (or None); `get(job_id)` reads a job; `pump(guild_id)` lets a
        server's line move (a slot was freed by another process)."""
        self.leases = leases
        self.clock = clock
        self.owner = owner
        self.lease = lease
        self._resume = resume
        self._request = request
        self._get = get
        self._pump = pump
        self._wake = asyncio.Event()
        self._answers: dict[str, asyncio.Future[str]] = {}
        self._renewing: asyncio.Task[None] | None = None
        self._taking_over: asyncio.Task[None] | None = None
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
        self._renewing = asyncio.create_task(self._renew_forever(), name="lease-renewal")
        self._taking_over = asyncio.create_task(self._take_over_forever(), name="lease-take-over")

    async def stop_taking_over(self) -> None:
        """The first step of a clean stop: no more jobs taken over, no more requests carried out (leases are still
        renewed while the manager's work finishes)."""
        for task in [self._taking_over, *self._handling]:
            if task is not None:
                task.cancel()
        await asyncio.gather(*[task for task in [self._taking_over, *self._handling] if task], return_exceptions=True)
        if self._stop_jump is not None:
            self._stop_jump()
            self._stop_jump = None

    async def stop(self) -> None:
        """Stop renewing and scanning; give every lease up and tell the other processes to look now."""
        await self.stop_taking_over()
        if self._renewing is not None:
            self._renewing.cancel()
            await asyncio.gather(self._renewing, return_exceptions=True)
        try:
            released = await self.leases.release(self.owner)
            if released:
                await self.leases.publish(json.dumps({"op": "scan"}))
                log.info("gave up %d jobs to the other processes", released)
        except StoreUnavailableError as error:
            log.warning("leases not given up (%s): other processes take the jobs when they run out", error.reason)

    # -- renewing ----------------------------------------------------------------------

    async def _renew_forever(self) -> None:
        loop = asyncio.get_running_loop()
        wait = self.renew_every
        while True:
            await asyncio.sleep(wait)
            began = loop.time()
            renewed = await self.renew()
            # The next one a renewal interval after this one began (not after it ended), sooner after a failure.
            wait = self.renew_every * (1.0 if renewed else RETRY_FRACTION) - (loop.time() - began)
            wait = max(wait, 0.0)

    async def renew(self) -> bool:
        """Extend every lease of this process by a lease time; False (logged) when the database did not answer
        within a third of the lease."""
        try:
            async with asyncio.timeout(self.renew_every):
                await self.leases.renew(self.owner, until=self.until())
        except (StoreUnavailableError, TimeoutError) as error:
            reason = getattr(error, "reason", None) or f"no answer within {self.renew_every:.1f} s"
            log.warning("leases not renewed (%s); trying again soon", reason)
            return False
        return True

    # -- taking over ----------------------------------------------------------------------

    async def _take_over_forever(self) -> None:
        while True:
            self._wake.clear()  # before looking: a wake-up heard while looking is not lost
            try:
                await self.take_over()
                wait = await self._until_next_expiry()
            except StoreUnavailableError as error:
                log.warning("orphaned jobs not looked for (%s)", error.reason)
                wait = self.renew_every
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
            orphans = await self.leases.orphans(self.owner, now=now, limit=SCAN_BATCH)
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
            await self._resume_all(claimed)
            claimed_total += len(claimed)
            if len(orphans) < SCAN_BATCH or not claimed:
                self.taken_over += claimed_total
                return claimed_total

    async def _resume_all(self, claimed: list[Job]) -> None:
        """Resume each claimed job; one that could not be (the database failed meanwhile) is given up again, with
        the rest of the batch, so the next scan (at once: a free lease counts as run out) takes them again."""
        for index, job in enumerate(claimed):
            try:
                await self._resume(job)
            except Exception:
                log.exception("job %d: taken over but not resumed; giving it up for the next scan", job.id)
                left = [other.id for other in claimed[index:]]
                with contextlib.suppress(StoreUnavailableError):
                    await self.leases.release(self.owner, job_ids=left)
                self._wake.set()
                raise

    def freed_slot(self, guild_id: int) -> None:
        """A job of this process left a server's slot: tell the others (their jobs of that server may start)."""
        task = asyncio.create_task(self._publish({"op": "pump", "guild": guild_id}), name=f"pump-{guild_id}")
        self._handling.add(task)
        task.add_done_callback(self._handling.discard)

    async def _publish(self, message: dict[str, Any]) -> None:
        try:
            await self.leases.publish(json.dumps(message))
        except StoreUnavailableError as error:
            log.warning("could not tell the other processes (%s)", error.reason)

    # -- requests to a job's holder ---------------------------------------------------------

    async def ask(self, job: Job, op: str, **fields: Any) -> str | None:
        """Have the holder of `job` do `op` (e.g. "cancel"); its answer, or None when nobody answered in time.

        A job whose lease ran out is claimed first and handled here.
        """
        now = self.clock.now()
        if job.lease_owner is None or job.lease_until is None or job.lease_until < now:
            claimed = await self.leases.claim([job.id], self.owner, until=now + self.lease, now=now)
            if claimed:
                await self._resume_all(claimed)
                return await self._request(claimed[0], {"op": op, **fields})
            fresh = await self._get(job.id)  # someone claimed it first, or it ended
            if fresh is None or fresh.lease_owner in (None, self.owner) or fresh.state.is_final:
                return None
            job = fresh
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
        elif op == "pump" and isinstance(message.get("guild"), int):
            self._pump(message["guild"])
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
