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

The profiles and the runs themselves are bench/polling_runs.py; here, the
comparison, its verdicts and its plot.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import shutil
import tempfile
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from bench.common import out_dir, run_virtual, table
from bench.polling_runs import COLD, FIXED, OURS, PROFILES, Options, Outcome, Profile, run_profile
from bot.emulator import Duration
from bot.settings import Settings

PRODUCTION_BUDGET = Settings(_env_file=None).runcomfy_requests_per_second


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
