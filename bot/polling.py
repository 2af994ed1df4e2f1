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

A new install has learned nothing yet, so each known model ships a prior
(`PRIORS`): the durations the policy itself records for that model, which
learned timings replace one by one. The queue's speed is the one thing finished
jobs' timings cannot give back after a restart, so the policy hands it out to
be saved (`queue_speed_to_save`) and takes it back at start
(`recall_queue_speed`); storage/polling_memory.py keeps it.
`bench/first_jobs.py` measures the first jobs of an install against later ones.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from bot.settings import DEFAULT_MODEL
from storage.models import Job, JobState, Timing

# Before anything is learned, for a model without its own prior: a guess for a single text-to-image job.
PRIOR_RUN_SECONDS = (4.0, 6.0, 8.0, 10.0, 14.0)
PRIOR_QUEUE_SECONDS = (0.5, 1.0, 2.0, 4.0)
# How long the queue speed may stay unsaved while it drifts by less than QUEUE_SPEED_CHANGE.
QUEUE_SPEED_SAVE_SECONDS = 60.0
QUEUE_SPEED_CHANGE = 0.1
# A prior yields to samples that fall outside its central 1 - 2 × PRIOR_BAND more often than this chance allows.
PRIOR_BAND = 0.1
PRIOR_DOUBT = 0.01
# Past this share of what was seen the samples say too little: the tail is extrapolated instead.
TAIL_QUANTILE = 0.975


@dataclass(frozen=True)
class Prior:
    """What a model's jobs take before this install has seen one: evenly spaced quantiles, in seconds.

    They are durations *as the policy records them* (queue: submit until the
    start was noticed; run: noticed start until noticed finish), not the true
    ones: learned timings are measured that way and replace the prior's points
    one by one, so both must speak the same language.
    """

    queue: tuple[float, ...]
    run: tuple[float, ...]
    seconds_per_position: float | None = None
    source: str = ""


def _seconds(text: str) -> tuple[float, ...]:
    """Durations written as one line of numbers (20 quantiles read better on one line than on twenty)."""
    return tuple(float(value) for value in text.split())


# Derived with `python -m bench.first_jobs --derive-prior` (200 jobs of bench/polling_runs.py's "typical"
# profile: queue lognormal(median 1.5 s, σ 0.6), run lognormal(median 8 s, σ 0.3), 1 s per queue
# position), 10 quantiles each: a prior worth ten jobs, so a model that behaves otherwise is learned
# after ten (sooner when it plainly disagrees, see Samples). RunComfy publishes no durations for
# ImagineArt 1.5: that profile is the project's stated assumption for it, so this prior is exactly as
# right as the profile. No queue speed is shipped: on that profile few jobs are seen counting down, and
# two derivations gave 0.84 and 1.72 s for a true 1 s; the first countdown measured sets it instead.
PRIORS: dict[str, Prior] = {
    DEFAULT_MODEL: Prior(
        queue=_seconds("2.81 2.81 2.81 2.81 2.81 2.81 2.81 2.81 2.84 4.62"),
        run=_seconds("4.60 4.76 5.26 5.89 6.42 7.12 7.90 8.65 9.62 11.19"),
        source="bench/polling_runs.py typical profile, as AdaptivePolicy records it (bench/first_jobs.py)",
    ),
}
GENERIC_PRIOR = Prior(PRIOR_QUEUE_SECONDS, PRIOR_RUN_SECONDS, None, "a guess for any text-to-image job")


def prior_for(model: str) -> Prior:
    """The shipped prior of `model`, or a generic guess for a model without one."""
    return PRIORS.get(model, GENERIC_PRIOR)


class PollPolicy(Protocol):
    """Decides the delay before a job's next poll; benchmarks swap in fixed intervals."""

    def delay(self, job: Job, now: datetime) -> float: ...

    def learn(self, timing: Timing) -> None: ...

    def observe_position(self, job_id: int, position: int, now: datetime) -> None: ...

    def forget(self, job_id: int) -> None: ...

    def expected_finish(self, job: Job) -> datetime | None: ...

    def recall_queue_speed(self, seconds_per_position: float | None) -> None: ...

    def queue_speed_to_save(self, now: datetime, *, final: bool = False) -> float | None: ...


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

    def recall_queue_speed(self, seconds_per_position: float | None) -> None:
        return None

    def queue_speed_to_save(self, now: datetime, *, final: bool = False) -> float | None:
        return None


class Samples:
    """A bounded, sorted window of durations, with interpolated CDF and quantiles.

    It starts from a prior of K points. Each real sample takes the place of
    one of them: with k real samples the prior is still there as K − k points
    (its own quantiles, so its shape is kept), and after K it is gone. A blend
    weighted by counts: early samples correct the prior without one of them
    standing for the whole distribution.

    A prior that is wrong would slow every job it still weighs on, so it
    yields at once when the samples plainly disagree with it: when more of
    them fall outside its central 80 % than chance allows (binomial tail below
    `PRIOR_DOUBT`, about one right prior in forty is dropped early by chance).
    """

    def __init__(self, prior: Iterable[float], size: int = 200) -> None:
        self._recent: deque[float] = deque(maxlen=size)
        self._prior = sorted(prior)
        if not self._prior:
            raise ValueError("a prior needs at least one duration")
        self._sorted: list[float] = list(self._prior)
        self._band = (_interpolate(self._prior, PRIOR_BAND), _interpolate(self._prior, 1.0 - PRIOR_BAND))
        self._outside = 0
        self.blending = True

    def add(self, value: float) -> None:
        if not self.blending:
            if len(self._recent) == self._recent.maxlen:
                del self._sorted[bisect.bisect_left(self._sorted, self._recent[0])]
            self._recent.append(value)
            bisect.insort(self._sorted, value)
            return
        self._recent.append(value)
        low, high = self._band
        self._outside += not low <= value <= high
        left = len(self._prior) - len(self._recent)
        if left <= 0 or _binomial_tail(len(self._recent), self._outside, 2 * PRIOR_BAND) < PRIOR_DOUBT:
            self.blending = False  # learned enough, or the prior is plainly wrong: only samples from here on
            self._sorted = sorted(self._recent)
        else:  # the prior shrinks by one point
            points = [_interpolate(self._prior, (i + 0.5) / left) for i in range(left)]
            self._sorted = sorted([*points, *self._recent])

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
        return _interpolate(self._sorted, q)

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
    queue: Samples = field(default_factory=lambda: Samples(prior_for(DEFAULT_MODEL).queue))
    run: Samples = field(default_factory=lambda: Samples(prior_for(DEFAULT_MODEL).run))
    seconds_per_position: float | None = field(default_factory=lambda: prior_for(DEFAULT_MODEL).seconds_per_position)
    lag_memory: float = 0.99  # weight of the past in the detection-lag average, per poll
    _progress: dict[int, _QueueProgress] = field(default_factory=dict)
    _lag_sum: float = 0.0
    _lag_weight: float = 0.0
    _saved_speed: float | None = None
    _saved_at: datetime | None = None
    _speed_seen: bool = False  # seconds_per_position was measured here or recalled, not only shipped

    @classmethod
    def for_model(cls, model: str, **options: Any) -> AdaptivePolicy:
        """A policy that starts from `model`'s shipped prior (`PRIORS`), or the generic one."""
        prior = prior_for(model)
        return cls(
            queue=Samples(prior.queue),
            run=Samples(prior.run),
            seconds_per_position=prior.seconds_per_position,
            **options,
        )

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
            spp = self.seconds_per_position if self._speed_seen else None  # a shipped guess yields to the first rate
            self.seconds_per_position = rate if spp is None else 0.7 * spp + 0.3 * rate
            self._speed_seen = True
        if before is None or position != before.position:
            self._progress[job_id] = _QueueProgress(position, now)

    def forget(self, job_id: int) -> None:
        self._progress.pop(job_id, None)

    def recall_queue_speed(self, seconds_per_position: float | None) -> None:
        """Start from the queue speed a previous process saved (None: nothing was saved)."""
        if seconds_per_position is not None and seconds_per_position > 0:
            self.seconds_per_position = seconds_per_position
            self._saved_speed = seconds_per_position
            self._speed_seen = True

    def queue_speed_to_save(self, now: datetime, *, final: bool = False) -> float | None:
        """The queue speed, when it is worth a write: new, moved by 10 %, or changed a minute ago.

        Call it after `observe_position`, and with `final=True` on a clean stop
        (then any change counts); a value returned counts as saved. Between
        saves the speed drifts a little unsaved, which a restart would not
        notice: one countdown corrects it.
        """
        speed, saved = self.seconds_per_position, self._saved_speed
        if speed is None or speed == saved:
            return None
        moved = saved is None or abs(speed - saved) >= QUEUE_SPEED_CHANGE * saved
        stale = self._saved_at is None or (now - self._saved_at).total_seconds() >= QUEUE_SPEED_SAVE_SECONDS
        if not (moved or stale or final):
            return None
        self._saved_speed, self._saved_at = speed, now
        return speed

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


def _binomial_tail(trials: int, hits: int, chance: float) -> float:
    """P(at least `hits` of `trials` happen) when each happens with `chance`."""
    return sum(math.comb(trials, k) * chance**k * (1 - chance) ** (trials - k) for k in range(hits, trials + 1))


def _interpolate(data: list[float], q: float) -> float:
    """The q-quantile of sorted `data`, interpolated between neighbours."""
    if len(data) == 1:
        return data[0]
    pos = min(max(q, 0.0), 1.0) * (len(data) - 1)
    i = int(pos)
    if i >= len(data) - 1:
        return data[-1]
    return data[i] + (pos - i) * (data[i + 1] - data[i])


def _spread(samples: Samples) -> float:
    """The width of the middle 80 % of the durations."""
    return samples.quantile(0.9) - samples.quantile(0.1)
