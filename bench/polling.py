"""Benchmark 1: our adaptive polling against peers' fixed intervals, side by side in one run.

    .venv/bin/python -m bench.polling                       # all profiles, all strategies (~3 min)
    .venv/bin/python -m bench.polling --profiles typical --scale 5     # the scale check
    .venv/bin/python -m bench.polling --rate-429 0.02       # with random 429s

For each profile the emulator runs the same seeded jobs (same arrivals, same
queue waits and run times, checked) under each strategy, through the real job
manager, RunComfy client and SQLite store. Detection delay is the loop time at
which the poll whose answer says "finished" came back, minus the emulator's
finish time for that request id. Calls per job are the emulator's submit +
status + result counters over the job count (downloads are not API calls).

Time is virtual (bench.common.VirtualClockLoop): durations are in the
unscaled seconds of the profile, waits pass `--scale` times faster, and the
CPU time of our own code costs nothing, so the fast strategies are not
penalised for the benchmark's own load. The rate budget is raised to
`--budget` requests/s so it never throttles a strategy; the peak rate each
one needed is reported next to the production default (10/s).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import random
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import SecretStr

from bench.common import CountingLimiter, loop_clock, out_dir, percentile, run_virtual, table
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
PRODUCTION_BUDGET = Settings(_env_file=None).runcomfy_requests_per_second


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


def fixed_curve(outcomes: Sequence[Outcome], calls: float) -> float:
    """The fixed intervals' median delay at `calls` per job, interpolated (or extrapolated) on log-log axes."""
    points = sorted((o.calls_per_job, o.median) for o in outcomes if o.strategy.startswith("fixed"))
    pairs = list(itertools.pairwise(points))
    (x0, y0), (x1, y1) = next(
        (pair for pair in pairs if pair[0][0] <= calls <= pair[1][0]),
        pairs[0] if calls < points[0][0] else pairs[-1],
    )
    slope = (math.log(y1) - math.log(y0)) / (math.log(x1) - math.log(x0))
    return math.exp(math.log(y0) + slope * (math.log(calls) - math.log(x0)))


def verdicts(name: str, outcomes: Sequence[Outcome]) -> list[object]:
    ours = next(o for o in outcomes if o.strategy == OURS)
    curve = fixed_curve(outcomes, ours.calls_per_job)
    needed = 0.5 if name in ("typical", "deep") else 1.0
    met = ours.median <= needed * curve
    return [
        name,
        ours.calls_per_job,
        ours.median,
        curve,
        ours.median / curve,
        f"≤ {needed:g}",
        "met" if met else "NOT MET",
    ]


def plot(results: dict[str, list[tuple[str, float, float]]], titles: dict[str, str], path: Path) -> None:
    """Calls per job against median delay, one panel per profile, from (strategy, calls/job, median) points."""
    try:
        import matplotlib as mpl
    except ImportError:
        print("plot skipped: matplotlib is not installed (.venv/bin/pip install -e '.[bench]')")
        return

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.2 * len(results), 4.8), squeeze=False)
    for ax, (name, points) in zip(axes[0], results.items(), strict=True):
        fixed = sorted((calls, median, label) for label, calls, median in points if label.startswith("fixed"))
        ax.plot([f[0] for f in fixed], [f[1] for f in fixed], "-", color="0.6", label="fixed intervals")
        ax.plot([f[0] for f in fixed], [f[1] / 2 for f in fixed], ":", color="0.6", label="half of fixed")
        for calls, median, label in fixed:
            ax.plot(calls, median, "o", color="tab:blue")
            ax.annotate(label.removeprefix("fixed "), (calls, median), textcoords="offset points", xytext=(5, 4))
        for label, calls, median in points:
            if not label.startswith("fixed"):
                colour = "tab:red" if label == OURS else "tab:orange"
                ax.plot(calls, median, "*", markersize=14, color=colour, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{name}\n{titles.get(name, '')}", fontsize=8)
        ax.set_xlabel("API calls per job")
        ax.set_ylabel("median detection delay (s)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def replot(dump: Path) -> Path:
    """Draw the plot again from a saved polling*.json."""
    data = json.loads(dump.read_text())
    points = {
        name: [(o["strategy"], o["calls_per_job"], o["median"]) for o in outcomes]
        for name, outcomes in data["results"].items()
    }
    path = dump.with_suffix(".png")
    plot(points, data["profiles"], path)
    return path


def _named(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected PROFILE=VALUE, got {text!r}")
    return name, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.polling", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--profiles", default="typical,heavy,deep", help="comma-separated (default: typical,heavy,deep)")
    add("--strategies", default=",".join([*(f"fixed {s:g} s" for s in FIXED), OURS, COLD]), help="comma-separated")
    add("--jobs", type=int, default=200, help="measured jobs per strategy (default 200)")
    add("--train", type=int, default=200, help="jobs that warm the store before 'ours' is measured (default 200)")
    add("--seed", type=int, default=1)
    add("--gap", type=float, default=0.5, help="mean seconds between arrivals (exponential; default 0.5)")
    add("--scale", type=float, default=20.0, help="virtual seconds per real second while idle (default 20)")
    add("--budget", type=float, default=5000.0, help="RunComfy requests/s allowed in this benchmark (default 5000)")
    add("--rate-429", type=float, default=0.0, help="share of status/result calls answered 429 (default 0)")
    add(
        "--queue-time", type=_named, action="append", default=[], metavar="PROFILE=DIST", help="e.g. deep=uniform:10,30"
    )
    add(
        "--run-time",
        type=_named,
        action="append",
        default=[],
        metavar="PROFILE=DIST",
        help="e.g. typical=lognormal:8,0.3",
    )
    add("--seconds-per-position", type=_named, action="append", default=[], metavar="PROFILE=S")
    add(
        "--policy",
        type=_named,
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="tune ours, e.g. catch_seconds=0.4",
    )
    add("--tag", default="", help="suffix for the output files")
    add("--replot", metavar="JSON", help="only draw the plot again from a saved bench/out/polling*.json")
    return parser


def profiles_from(args: argparse.Namespace) -> list[Profile]:
    chosen: dict[str, Profile] = {}
    for name in args.profiles.split(","):
        chosen[name] = PROFILES.get(name) or Profile(name, Duration.constant(1.0), Duration.constant(8.0), 1.0)
    for attribute, items in (("queue", args.queue_time), ("run", args.run_time), ("spp", args.seconds_per_position)):
        for name, value in items:
            if name not in chosen:
                raise SystemExit(f"--{attribute}: profile {name!r} is not in --profiles")
            p = chosen[name]
            if attribute == "queue":
                chosen[name] = Profile(name, Duration.parse(value), p.run, p.seconds_per_position)
            elif attribute == "run":
                chosen[name] = Profile(name, p.queue, Duration.parse(value), p.seconds_per_position)
            else:
                chosen[name] = Profile(name, p.queue, p.run, float(value))
    return list(chosen.values())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.replot:
        print(f"plot: {replot(Path(args.replot))}")
        return 0
    profiles = profiles_from(args)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    shm = Path("/dev/shm")  # noqa: S108 (only the parent of a private mkdtemp directory: tmpfs, fsyncs cost nothing)
    workdir = Path(tempfile.mkdtemp(prefix="bench-polling-", dir=shm if shm.is_dir() else None))
    tuning = {name: float(value) for name, value in args.policy}
    opts = Options(args.jobs, args.train, args.seed, args.gap, args.budget, args.rate_429, workdir, tuning)
    print(f"polling benchmark: {args.jobs} jobs per strategy, time scale {args.scale:g}, seed {args.seed}")
    results: dict[str, list[Outcome]] = {}
    try:
        for profile in profiles:
            print(f"{profile.name}: {profile.describe()}", flush=True)
            results[profile.name] = run_virtual(partial(run_profile, profile, strategies, opts), args.scale)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    headers = ["profile", "strategy", "median delay s", "p95 delay s", "calls/job", "429s", "peak req/s", "failed"]
    rows = [
        [name, o.strategy, o.median, o.p95, o.calls_per_job, o.status_429, o.peak_rps, o.failed]
        for name, outcomes in results.items()
        for o in outcomes
    ]
    print()
    print(table(headers, rows))
    print(f"\n(peak req/s: most requests in any second of one run; production budget {PRODUCTION_BUDGET:g}/s)")
    comparable = {
        name: outs for name, outs in results.items() if sum(o.strategy.startswith("fixed") for o in outs) >= 2
    }
    report = [verdicts(name, outs) for name, outs in comparable.items() if any(o.strategy == OURS for o in outs)]
    if report:
        print()
        print(
            table(
                ["profile", "ours calls/job", "ours median s", "fixed at same calls s", "ratio", "goal", "verdict"],
                report,
            )
        )
    out = out_dir()
    suffix = f"-{args.tag}" if args.tag else ""
    if comparable and len(comparable) == len(results):
        points = {name: [(o.strategy, o.calls_per_job, o.median) for o in outs] for name, outs in results.items()}
        plot(points, {p.name: p.describe() for p in profiles}, out / f"polling{suffix}.png")
        print(f"\nplot: {out / f'polling{suffix}.png'}")
    dump = {
        "scale": args.scale,
        "jobs": args.jobs,
        "seed": args.seed,
        "profiles": {p.name: p.describe() for p in profiles},
        "results": {
            name: [
                {
                    "strategy": o.strategy,
                    "median": o.median,
                    "p95": o.p95,
                    "calls_per_job": o.calls_per_job,
                    "calls": o.calls,
                    "status_429": o.status_429,
                    "peak_rps": o.peak_rps,
                    "failed": o.failed,
                }
                for o in outcomes
            ]
            for name, outcomes in results.items()
        },
    }
    (out / f"polling{suffix}.json").write_text(json.dumps(dump, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
