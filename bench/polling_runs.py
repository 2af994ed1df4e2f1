"""The runs of bench/polling.py: one profile's seeded jobs under one polling strategy, and what each run saw.

Each run drives the real job manager, RunComfy client (timed: when an answer
first said "finished") and SQLite store against the emulator; bench/first_jobs.py
and tests/bot/test_polling.py run them too.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import SecretStr

from bench.common import CountingLimiter, loop_clock, percentile
from bot.download import DownloadedImage
from bot.emulator import Duration, Emulator, EmulatorConfig
from bot.jobs import Delivered, Gone, JobManager, RecoveredReply, Reply, delivery
from bot.jobs.events import JobDelivered, JobEvent, JobFailed
from bot.polling import AdaptivePolicy, FixedPolicy, PollPolicy
from bot.runcomfy import RequestResult, RequestStatus, RunComfyClient, UpstreamState
from bot.settings import Settings
from storage.models import Job, JobOrigin, NewJob
from storage.sqlite import SQLiteJobStore

TOKEN = "bench-token"  # noqa: S105 (the emulator's stand-in token)
FIXED = (0.1, 0.5, 2.0, 3.0, 5.0)
OURS, COLD = "ours", "ours (cold)"
FINISHED = frozenset({UpstreamState.FINISHED, UpstreamState.SUCCEEDED, UpstreamState.FAILED})


@dataclass(frozen=True)
class Profile:
    """The assumptions of one profile: RunComfy publishes no durations for this model."""

    name: str
    queue: Duration
    run: Duration
    seconds_per_position: float

    def describe(self) -> str:
        return f"queue {_dist(self.queue)}, run {_dist(self.run)}, {self.seconds_per_position:g} s per queue position"


PROFILES = {
    "typical": Profile("typical", Duration.lognormal(1.5, 0.6), Duration.lognormal(8.0, 0.3), 1.0),
    "heavy": Profile("heavy", Duration.lognormal(1.5, 0.6), Duration.lognormal(6.0, 1.0, 60.0), 1.0),
    "deep": Profile("deep", Duration.uniform(10.0, 30.0), Duration.lognormal(6.0, 0.3), 2.0),
}


def _dist(duration: Duration) -> str:
    if duration.kind == "lognormal":
        cap = f", cap {duration.cap:g} s" if math.isfinite(duration.cap) else ""
        return f"lognormal(median {duration.a:g} s, σ {duration.b:g}{cap})"
    if duration.kind == "uniform":
        return f"uniform({duration.a:g}–{duration.b:g} s)"
    return f"{duration.a:g} s"


class TimedClient(RunComfyClient):
    """The product client, noting when an answer first says a request finished (loop time)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.detected: dict[str, float] = {}
        self.started_seen: dict[str, float] = {}
        self.polls: Counter[str] = Counter()  # status and result calls per request id

    def _saw(self, request_id: str, state: UpstreamState) -> None:
        if state is UpstreamState.RUNNING and request_id not in self.started_seen:
            self.started_seen[request_id] = asyncio.get_running_loop().time()
        if state in FINISHED and request_id not in self.detected:
            self.detected[request_id] = asyncio.get_running_loop().time()

    async def status(self, request_id: str) -> RequestStatus:
        self.polls[request_id] += 1
        answer = await super().status(request_id)
        self._saw(request_id, answer.state)
        return answer

    async def result(self, request_id: str, *, include_cost: bool = False) -> RequestResult:
        self.polls[request_id] += 1
        answer = await super().result(request_id, include_cost=include_cost)
        self._saw(request_id, answer.state)
        return answer


@dataclass
class Outcome:
    strategy: str
    jobs: int
    delays: list[float]
    calls: dict[str, int]
    status_429: int
    peak_rps: int
    failed: int
    timeline: list[tuple[float, float]] = field(repr=False)
    real_seconds: float
    start_lag: float = math.nan
    # Per job in submission order: (detection delay, API calls: its submit and its polls, refused ones included).
    per_job: list[tuple[float, int]] = field(default_factory=list, repr=False)

    @property
    def calls_per_job(self) -> float:
        return sum(self.calls.get(route, 0) for route in ("submit", "status", "result", "cancel")) / self.jobs

    @property
    def median(self) -> float:
        return percentile(self.delays, 50)

    @property
    def p95(self) -> float:
        return percentile(self.delays, 95)


@dataclass(frozen=True)
class Options:
    jobs: int
    train: int
    seed: int
    gap: float
    budget: float
    rate_429: float
    workdir: Path
    tuning: dict[str, float]


def policy_for(strategy: str, tuning: dict[str, float]) -> PollPolicy:
    if strategy.startswith("fixed "):
        return FixedPolicy(float(strategy.removeprefix("fixed ").removesuffix(" s")))
    settings = Settings(_env_file=None)  # production defaults, not this shell's env
    options = {"min_interval": settings.poll_min_interval_seconds, "max_interval": settings.poll_max_interval_seconds}
    return AdaptivePolicy.for_model(EmulatorConfig().model_id, **{**options, **tuning})


class Discard:
    """Where the benchmark's images go: nowhere (only the detection delay is measured)."""

    async def deliver_images(self, job: Job, images: Sequence[DownloadedImage]) -> delivery.Outcome:
        return Delivered("bench")

    async def deliver_notice(self, job: Job) -> delivery.Outcome:
        return Gone("no notices in a benchmark")

    async def recover_reply(self, job: Job) -> RecoveredReply:
        return RecoveredReply(Reply.NEVER)


async def run_jobs(
    profile: Profile,
    strategy: str,
    opts: Options,
    *,
    seed: int,
    db: Path,
    count: int,
    policy: PollPolicy | None = None,
) -> Outcome:
    """Submit `count` jobs with seeded arrivals under `strategy`; wait until every one is delivered or failed.

    `policy` replaces the strategy's own (a caller that wants to look at what it learned).
    """
    config = EmulatorConfig(
        queue_time=profile.queue,
        run_time=profile.run,
        seconds_per_queue_position=profile.seconds_per_position,
        rate_429=opts.rate_429,
        fault_routes=frozenset({"status", "result"}),
    )
    started = time.perf_counter()
    limiter = CountingLimiter(opts.budget)
    async with Emulator(config, token=TOKEN, seed=seed) as emulator, aiohttp.ClientSession() as session:
        client = TimedClient(
            session,
            base_url=emulator.url,
            model=config.model_id,
            token=SecretStr(TOKEN),
            limiter=limiter,
            allowed_hosts=["127.0.0.1"],
        )
        store = await SQLiteJobStore.open(db)
        policy = policy or policy_for(strategy, opts.tuning)
        clock = loop_clock()
        manager = JobManager(client, store, model=config.model_id, policy=policy, clock=clock)
        settled: set[int] = set()
        failed = 0
        all_done = asyncio.Event()

        def on_event(event: JobEvent) -> None:
            nonlocal failed
            if isinstance(event, JobFailed):
                failed += 1
            elif not isinstance(event, JobDelivered):
                return
            settled.add(event.job.id)
            if len(settled) == count:
                all_done.set()

        manager.subscribe(on_event)
        await manager.start(Discard())
        loop = asyncio.get_running_loop()
        arrivals = random.Random(f"{seed}:arrivals")
        due = loop.time()
        try:
            for index in range(count):  # one at a time, so the emulator draws the timings in the same order
                due += arrivals.expovariate(1.0 / opts.gap)
                await asyncio.sleep(max(0.0, due - loop.time()))
                await manager.submit(
                    NewJob(
                        model=config.model_id,
                        prompt=f"benchmark job {index}",
                        aspect_ratio="1:1",
                        seed=index,
                        origin=JobOrigin(channel_id=1),
                    )
                )
            await asyncio.wait_for(all_done.wait(), timeout=3600)
        finally:
            await manager.stop()  # keeps the queue speed for the next start, as the bot's stop does
            await store.close()
        finished = emulator.finished_at_monotonic
        start_lags = [
            client.started_seen[rid] - job.started for rid, job in emulator.jobs.items() if rid in client.started_seen
        ]
        delays = [client.detected[rid] - finished[rid] for rid in emulator.jobs if rid in client.detected]
        timeline = [(job.queue_wait, job.run_time) for job in emulator.jobs.values()]
        per_job = [
            (client.detected[rid] - finished[rid], 1 + client.polls[rid])
            for rid in emulator.jobs  # insertion order: the order of submission
            if rid in client.detected
        ]
        return Outcome(
            strategy=strategy,
            jobs=count,
            delays=delays,
            calls=dict(emulator.calls),
            status_429=emulator.statuses.get(429, 0),
            peak_rps=limiter.peak(),
            failed=failed,
            timeline=timeline,
            real_seconds=time.perf_counter() - started,
            start_lag=percentile(start_lags, 50),
            per_job=per_job,
        )


async def run_profile(profile: Profile, strategies: Sequence[str], opts: Options) -> list[Outcome]:
    outcomes = []
    for strategy in strategies:
        db = opts.workdir / f"{profile.name}-{strategy.replace(' ', '_')}.sqlite3"
        if strategy == OURS:
            # Production restarts with the store's timings: train on other jobs drawn from the same profile.
            await run_jobs(profile, OURS, opts, seed=opts.seed + 1000, db=db, count=opts.train)
        outcome = await run_jobs(profile, strategy, opts, seed=opts.seed, db=db, count=opts.jobs)
        print(
            f"  {profile.name:8} {strategy:12} median {outcome.median:6.3f} s  p95 {outcome.p95:6.3f} s  "
            f"{outcome.calls_per_job:6.1f} calls/job (status {outcome.calls.get('status', 0) / outcome.jobs:.1f}, "
            f"result {outcome.calls.get('result', 0) / outcome.jobs:.1f}), start seen {outcome.start_lag:.2f} s late  "
            f"({outcome.real_seconds:.1f} s real)",
            flush=True,
        )
        outcomes.append(outcome)
    reference = outcomes[0].timeline
    for outcome in outcomes[1:]:
        if outcome.timeline != reference:
            raise RuntimeError(f"{profile.name}: {outcome.strategy} did not run the same jobs")
    return outcomes
