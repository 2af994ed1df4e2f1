"""When to ask RunComfy about a job next.

RunComfy has no push, so a finish is only noticed by polling. A fixed interval
either wastes calls (0.1 s) or makes members wait for a finished image (5 s).
The adaptive policy spends its calls where finishes are likely: it learns the
queue waits and run times of finished jobs (kept in the store across restarts)
and schedules each next poll so that it has a fixed chance of catching the
finish, given that the job has not finished yet. Polls bunch up around the
usual finish time and thin out early in a run and in the tails. Queue positions
say when a queued job can start, so a deep queue costs a few looks, not one a
second. `bench/polling.py` measures it against peers' fixed intervals.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from storage.models import Job, JobState, Timing

# Before anything is learned: a guess for a single text-to-image job.
PRIOR_RUN_SECONDS = (4.0, 6.0, 8.0, 10.0, 14.0)
PRIOR_QUEUE_SECONDS = (0.5, 1.0, 2.0, 4.0)
# Past this share of what was seen the samples say too little: the tail is extrapolated instead.
TAIL_QUANTILE = 0.975


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

    def mean_between(self, low: float, high: float) -> float | None:
        """The mean of the samples in (low, high], or None if there are none."""
        data = self._sorted
        inside = data[bisect.bisect_right(data, low) : bisect.bisect_right(data, high)]
        return sum(inside) / len(inside) if inside else None


@dataclass
class _QueueProgress:
    position: int
    seen_at: datetime


@dataclass
class AdaptivePolicy:
    """Polls with a fixed conditional chance of catching the finish, learned from finished jobs.

    `catch` is that chance per poll while the job runs: 0.12 packs about eight
    polls into the bulk of the run-time distribution, densely where finishes are
    common. A constant chance suits the median delay (what a member usually
    waits) better than spacing by sqrt(hazard), which minimises the mean but
    spends polls on the tail. Learned run times end when a finish was *noticed*,
    so they run late by our own detection delay; the run clock is moved on by a
    typical (geometric mean) such delay, `detection_lag`, or every poll would
    aim late.

    While queued, `queue_catch` does the same for noticing the start, which
    anchors the run clock. If queue waits vary much less than run times
    (`start_worth`), knowing the start hardly sharpens the finish: the first
    look then comes late (`short_queue_catch`) and finds most jobs running.
    Once a queue position and the queue's speed (`seconds_per_position`,
    learned from positions counting down) are known, the next look is when the
    queue can have reached the job, after `position × seconds_per_position`, or
    `queue_step` of the way there while more than two jobs are ahead. Past the
    top of the learned durations the hazard is taken to fall like 1/elapsed (a
    heavy tail), so gaps grow in proportion to the time elapsed, up to
    `max_interval`.
    """

    min_interval: float = 0.25
    max_interval: float = 10.0
    catch: float = 0.12
    queue_catch: float = 0.3
    short_queue_catch: float = 0.8
    start_worth: float = 0.5
    queue_step: float = 0.6
    queue: Samples = field(default_factory=lambda: Samples(PRIOR_QUEUE_SECONDS))
    run: Samples = field(default_factory=lambda: Samples(PRIOR_RUN_SECONDS))
    seconds_per_position: float | None = None
    lag_memory: float = 0.99  # weight of the past in the detection-lag average, per poll
    _progress: dict[int, _QueueProgress] = field(default_factory=dict)
    _lag_sum: float = 0.0
    _lag_weight: float = 0.0

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

    @property
    def detection_lag(self) -> float:
        """Our own typical delay in noticing a finish, estimated from the gaps we chose.

        Learned run times end when a finish was *noticed*, so they run late by
        about this much; the run clock is moved on by it to aim at the finish
        itself. A geometric mean, so the few long gaps of a heavy tail do not
        pull the bulk's polls early.
        """
        return math.exp(self._lag_sum / self._lag_weight) if self._lag_weight else 0.0

    def delay(self, job: Job, now: datetime) -> float:
        if job.state is JobState.IN_PROGRESS and job.started_at is not None:
            elapsed = (now - job.started_at).total_seconds() + self.detection_lag
            wait = min(max(self._next_catch(self.run, elapsed, self.catch), self.min_interval), self.max_interval)
            # Every gap holds the finish with the same chance; one inside it is noticed at the gap's end.
            typical_finish = self.run.mean_between(elapsed, elapsed + wait)
            lag = wait / 2 if typical_finish is None else elapsed + wait - typical_finish
            self._lag_sum = self.lag_memory * self._lag_sum + math.log(max(lag, 1e-3))
            self._lag_weight = self.lag_memory * self._lag_weight + 1.0
        else:
            wait = self._queue_wait(job, now)
        return min(max(wait, self.min_interval), self.max_interval)

    def expected_finish(self, job: Job) -> datetime | None:
        """When the job should finish, once it runs and enough is learned to say so."""
        if job.state is not JobState.IN_PROGRESS or job.started_at is None or self.run.learned < 3:
            return None
        return job.started_at + timedelta(seconds=self.run.median())

    def _queue_wait(self, job: Job, now: datetime) -> float:
        progress = self._progress.get(job.id)
        spp = self.seconds_per_position
        if progress is not None and spp and job.queue_position is not None:
            # Position p means p - 1 to p positions left: the start is due p × spp after it was first seen.
            ahead = progress.position * spp - (now - progress.seen_at).total_seconds()
            if progress.position > 2:
                return self.queue_step * ahead
            return ahead + 0.05 * spp
        since = job.queued_at or job.created_at
        return self._next_catch(self.queue, (now - since).total_seconds(), self._queue_catch())

    def _queue_catch(self) -> float:
        """`queue_catch` while queue waits vary at least `start_worth` times as much as run times.

        Otherwise the start barely sharpens the finish, so one late look that
        finds most jobs running (`short_queue_catch`) beats several early ones.
        """
        return (
            self.queue_catch if _spread(self.queue) >= self.start_worth * _spread(self.run) else self.short_queue_catch
        )

    def _next_catch(self, samples: Samples, elapsed: float, catch: float) -> float:
        """Seconds until the job has `catch` chance to have finished, given it has not yet.

        Past the top of the durations seen the hazard is taken to fall like
        1/elapsed (a heavy tail): P(within g) = g / (elapsed + g).
        """
        done = samples.cdf(elapsed)
        if done > TAIL_QUANTILE:
            base = max(elapsed, self.min_interval)
            return catch * base / (1.0 - catch)
        return samples.quantile(done + catch * (1.0 - done)) - elapsed


def _spread(samples: Samples) -> float:
    """The width of the middle 80 % of the durations."""
    return samples.quantile(0.9) - samples.quantile(0.1)
