"""One task that runs steps of many jobs when they fall due: a heap of due times, not a task per job.

The row is the truth (each job's next due time is written to the store before
it is scheduled here); this worker is only a cache of "what is due next",
rebuilt at start. A thousand pending jobs cost a heap entry each. Due times
are datetimes of the bot's `Clock`, so a test clock that jumps wakes the
worker at once.

Steps run as tasks under a concurrency cap, and never two of one job at once:
a job falling due while its step runs goes again right after it. With a key
(the delivery stage keys by Discord channel), at most `per_key` steps of one
key run at once and the rest wait, in order, outside the cap: one slow channel
occupies a few slots, never all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Hashable
from datetime import datetime

from bot.clock import Clock

log = logging.getLogger(__name__)

Step = Callable[[int], Awaitable[None]]


class Worker:
    def __init__(self, name: str, clock: Clock, step: Step, *, concurrency: int, per_key: int = 1) -> None:
        self.name = name
        self.clock = clock
        self._step = step
        self._slots = asyncio.Semaphore(concurrency)
        self._per_key = per_key
        self._heap: list[tuple[datetime, int, int]] = []
        self._due: dict[int, datetime] = {}
        self._keys: dict[int, Hashable] = {}
        self._running: Counter[Hashable] = Counter()
        self._held: dict[Hashable, deque[int]] = {}
        self._active: set[int] = set()  # jobs whose step runs now
        self._again: set[int] = set()  # jobs that fell due while their step ran
        self._seq = itertools.count()
        self._waiter: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._unhook: Callable[[], None] | None = None

    # -- what the manager calls ---------------------------------------------

    def schedule(self, job_id: int, at: datetime, *, key: Hashable = None) -> None:
        """Run the job's step at `at` (now, if in the past); a later call replaces an earlier one."""
        self._due[job_id] = at
        if key is not None:
            self._keys[job_id] = key
        heapq.heappush(self._heap, (at, next(self._seq), job_id))
        self._wake()

    def discard(self, job_id: int) -> None:
        """Forget the job (it ended); a step already running or waiting for its key still runs, and finds so."""
        self._due.pop(job_id, None)
        self._keys.pop(job_id, None)

    def start(self) -> None:
        self._unhook = self.clock.on_jump(self._wake)
        self._loop_task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self, grace: float) -> None:
        """Stop starting steps; running ones get `grace` seconds to write their state, then are cancelled."""
        if self._unhook is not None:
            self._unhook()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        self._held.clear()
        self._again.clear()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=grace)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def pending(self) -> int:
        """Jobs scheduled, stepping or waiting for their key."""
        return len(self._due) + len(self._tasks) + sum(len(held) for held in self._held.values())

    @property
    def alive(self) -> bool:
        return self._loop_task is not None and not self._loop_task.done()

    # -- the loop --------------------------------------------------------------

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = self.clock.now()
            while self._heap and self._heap[0][0] <= now:
                at, _, job_id = heapq.heappop(self._heap)
                if self._due.get(job_id) != at:
                    continue  # replaced by a later schedule, or discarded
                del self._due[job_id]
                key = self._keys.get(job_id)
                if self._admit(job_id, key):
                    await self._launch(job_id, key)
            # Sleep until the earliest due time, a new schedule or a clock jump, whichever comes first. A bare
            # future (not wait_for, which can swallow a cancel on 3.11) keeps stop() reliable.
            self._waiter = loop.create_future()
            timer = None
            if self._heap:
                delay = (self._heap[0][0] - self.clock.now()).total_seconds()
                timer = loop.call_later(max(delay, 0.0), self._wake)
            try:
                await self._waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()

    def _admit(self, job_id: int, key: Hashable) -> bool:
        """Whether the job's step may start now; if not, it is kept to run when its job or key is free."""
        if job_id in self._active:
            self._again.add(job_id)
            return False
        if key is not None and self._running[key] >= self._per_key:
            held = self._held.setdefault(key, deque())
            if job_id not in held:
                held.append(job_id)
            return False
        if key is not None:
            self._running[key] += 1
        self._active.add(job_id)
        return True

    async def _launch(self, job_id: int, key: Hashable) -> None:
        """Start the job's step once a slot is free; the job is active and its key counted already."""
        await self._slots.acquire()
        task = asyncio.create_task(self._guarded(job_id), name=f"{self.name}-{job_id}")
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._finished(done, job_id, key))

    async def _guarded(self, job_id: int) -> None:
        try:
            await self._step(job_id)
        except Exception:
            # The step writes the job's next due time before it acts, so a bug here loses nothing: it runs again.
            log.exception("job %d: %s step failed", job_id, self.name, extra={"job_id": job_id})

    def _finished(self, task: asyncio.Task[None], job_id: int, key: Hashable) -> None:
        self._tasks.discard(task)
        self._slots.release()
        self._active.discard(job_id)
        if job_id in self._again:
            self._again.discard(job_id)
            self.schedule(job_id, self.clock.now())
        if key is None:
            return
        held = self._held.get(key)
        if not held:
            self._held.pop(key, None)
            self._running[key] -= 1
            if self._running[key] <= 0:
                del self._running[key]
            return
        # The key's place goes straight to the next job waiting for it, so a job arriving meanwhile cannot
        # overtake the ones that waited.
        following = held.popleft()
        self._active.add(following)
        starter = asyncio.create_task(self._launch(following, key), name=f"{self.name}-start-{following}")
        self._tasks.add(starter)
        starter.add_done_callback(self._tasks.discard)
