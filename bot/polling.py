"""When to ask RunComfy about a job next.

RunComfy has no push, so a finish is only noticed by polling. A fixed interval
either wastes calls (0.1 s) or makes members wait for a finished image (5 s).
The adaptive policy spends its calls where finishes are likely: it learns the
queue waits and run times of finished jobs (kept in the store across restarts)
and schedules each next poll so that it has a fixed chance of catching the
finish, given that the job has not finished yet. Polls bunch up around the
usual finish time and thin out in the tails and deep in the queue.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from storage.models import Job, JobState, Timing

# Before anything is learned: a guess for a single text-to-image job.
PRIOR_RUN_SECONDS = (4.0, 6.0, 8.0, 10.0, 14.0)
PRIOR_QUEUE_SECONDS = (0.5, 1.0, 2.0, 4.0)


class PollPolicy(Protocol):
    """Decides the delay before a job's next poll; benchmarks swap in fixed intervals."""

    def delay(self, job: Job, now: datetime) -> float: ...

    def learn(self, timing: Timing) -> None: ...

    def observe_position(self, job_id: int, position: int, now: datetime) -> None: ...

    def forget(self, job_id: int) -> None: ...

    def expected_finish(self, job: Job) -> datetime | None: ...


@dataclass
class FixedPolicy:
    """What peers do: the same interval whatever the job is doing."""

    interval: float

    def delay(self, job: Job, now: datetime) -> float:
        return self.interval

    def learn(self, timing: Timing) -> None:
        return None

    def observe_position(self, job_id: int, position: int, now: datetime) -> None:
        return None

    def forget(self, job_id: int) -> None:
        return None

    def expected_finish(self, job: Job) -> datetime | None:
        return None


class Samples:
    """A bounded, sorted window of durations, with interpolated CDF and quantiles."""

    def __init__(self, prior: Iterable[float], size: int = 200) -> None:
        self._recent: deque[float] = deque(maxlen=size)
        self._sorted: list[float] = sorted(prior)
        self._prior = list(self._sorted)

    def add(self, value: float) -> None:
        if not self._recent:
            self._sorted = []  # the first real sample replaces the prior
        if len(self._recent) == self._recent.maxlen:
            oldest = self._recent[0]
            del self._sorted[bisect.bisect_left(self._sorted, oldest)]
        self._recent.append(value)
        bisect.insort(self._sorted, value)

    @property
    def learned(self) -> int:
        return len(self._recent)

    def cdf(self, x: float) -> float:
        data = self._sorted
        if x <= data[0]:
            return 0.0 if len(data) > 1 else (0.0 if x < data[0] else 1.0)
        if x >= data[-1]:
            return 1.0
        i = bisect.bisect_right(data, x)
        lo, hi = data[i - 1], data[i]
        frac = 0.0 if hi == lo else (x - lo) / (hi - lo)
        return (i - 1 + frac) / (len(data) - 1)

    def quantile(self, q: float) -> float:
        data = self._sorted
        if len(data) == 1:
            return data[0]
        pos = min(max(q, 0.0), 1.0) * (len(data) - 1)
        i = int(pos)
        if i >= len(data) - 1:
            return data[-1]
        return data[i] + (pos - i) * (data[i + 1] - data[i])

    def median(self) -> float:
        return self.quantile(0.5)


@dataclass
class _QueueProgress:
    position: int
    seen_at: datetime


@dataclass
class AdaptivePolicy:
    """Polls with a fixed conditional chance of catching the finish, learned from finished jobs.

    `catch` is that chance per poll: 0.2 means about five polls cover the bulk of
    the distribution, packed densely where finishes are common.
    """

    min_interval: float = 0.25
    max_interval: float = 10.0
    catch: float = 0.2
    tail_factor: float = 0.3
    queue: Samples = field(default_factory=lambda: Samples(PRIOR_QUEUE_SECONDS))
    run: Samples = field(default_factory=lambda: Samples(PRIOR_RUN_SECONDS))
    seconds_per_position: float | None = None
    _progress: dict[int, _QueueProgress] = field(default_factory=dict)

    def learn(self, timing: Timing) -> None:
        self.queue.add(max(timing.queue_seconds, 0.0))
        self.run.add(max(timing.run_seconds, 0.0))

    def learn_all(self, timings: Iterable[Timing]) -> None:
        for timing in reversed(list(timings)):  # oldest first, so the newest stay in the window
            self.learn(timing)

    def observe_position(self, job_id: int, position: int, now: datetime) -> None:
        """Learn how fast the queue moves from one job's positions counting down."""
        before = self._progress.get(job_id)
        if before is not None and position < before.position:
            rate = (now - before.seen_at).total_seconds() / (before.position - position)
            spp = self.seconds_per_position
            self.seconds_per_position = rate if spp is None else 0.7 * spp + 0.3 * rate
        if before is None or position != before.position:
            self._progress[job_id] = _QueueProgress(position, now)

    def forget(self, job_id: int) -> None:
        self._progress.pop(job_id, None)

    def delay(self, job: Job, now: datetime) -> float:
        if job.state is JobState.IN_PROGRESS and job.started_at is not None:
            wait = self._next_catch(self.run, (now - job.started_at).total_seconds())
        elif job.queue_position is not None and job.queue_position > 1 and self.seconds_per_position:
            # Deep in a moving queue: come back when it has moved about a third of the way.
            wait = 0.35 * (job.queue_position - 1) * self.seconds_per_position
        else:
            since = job.queued_at or job.created_at
            wait = self._next_catch(self.queue, (now - since).total_seconds())
        return min(max(wait, self.min_interval), self.max_interval)

    def expected_finish(self, job: Job) -> datetime | None:
        """When the job should finish, once it runs and enough is learned to say so."""
        if job.state is not JobState.IN_PROGRESS or job.started_at is None or self.run.learned < 3:
            return None
        return job.started_at + timedelta(seconds=self.run.median())

    def _next_catch(self, samples: Samples, elapsed: float) -> float:
        """Seconds until the moment the job has `catch` chance to have finished, given it has not yet."""
        done = samples.cdf(elapsed)
        if done >= 0.999:
            return self.tail_factor * max(elapsed, self.min_interval)
        target = samples.quantile(done + self.catch * (1.0 - done))
        return target - elapsed
