"""Benchmark 1b: are the first jobs of a new install detected as fast as the ones after them?

    .venv/bin/python -m bench.first_jobs                          # typical, 40 installs × 24 jobs (~2 min)
    .venv/bin/python -m bench.first_jobs --profiles typical,heavy,deep

A new install has nothing in its database to learn from, so its first jobs
are polled from the policy's prior alone. For each of `--installs` seeds this
runs `--jobs` jobs through the real job manager, client and SQLite store, on
an empty database, with the same arrivals, queue waits and run times as
bench.polling (`--gap` 0.5 s), and notes each job's detection delay and calls
(its submit plus its status and result calls) by its place in the install's
order. Jobs 1–8 of every install are pooled and compared with jobs 9–24: the
goal is a median delay for the first eight within 1.2× of the later ones',
at no more calls per job.

`--derive-prior` prints what the policy records over `--train` jobs of a
profile (quantiles of the queue and run times as it notices them, and the
queue speed), in the form bot/polling.py's `PRIORS` takes.

`--restart` measures a restart instead: each install first runs `--train`
jobs on its database, then a new manager starts on it (as after a deploy)
and the measured jobs follow. With `--forget-queue-speed` the restarted
manager does not get the queue speed the first one saved.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from bench.common import out_dir, percentile, run_virtual, table
from bench.polling_runs import OURS, PROFILES, Options, Outcome, Profile, policy_for, run_jobs
from bot.emulator import EmulatorConfig
from bot.polling import AdaptivePolicy
from storage.sqlite import SQLiteJobStore

FIRST = 8


@dataclass
class Pool:
    """Delays and calls of jobs pooled by their place in an install's order."""

    delays: list[float]
    calls: list[int]

    @property
    def median(self) -> float:
        return percentile(self.delays, 50)

    @property
    def calls_per_job(self) -> float:
        return sum(self.calls) / len(self.calls) if self.calls else float("nan")


def pools(outcomes: list[Outcome], first: int = FIRST) -> tuple[Pool, Pool]:
    """Jobs 1..first and first+1.. of every install, each pooled across installs."""
    early, late = Pool([], []), Pool([], [])
    for outcome in outcomes:
        for index, (delay, calls) in enumerate(outcome.per_job):
            pool = early if index < first else late
            pool.delays.append(delay)
            pool.calls.append(calls)
    return early, late


async def one_install(profile: Profile, opts: Options, seed: int, args: argparse.Namespace) -> Outcome:
    db = opts.workdir / f"{profile.name}-{seed}.sqlite3"
    if args.restart:
        await run_jobs(profile, OURS, opts, seed=seed + 100_000, db=db, count=args.train)
    if args.forget_queue_speed:
        forget_queue_speed(db)
    return await run_jobs(profile, OURS, opts, seed=seed, db=db, count=args.jobs)


async def derive_prior(profile: Profile, opts: Options, args: argparse.Namespace, points: int = 10) -> str:
    """Run `--train` jobs from an empty database; the timings the store then holds, as `points` quantiles."""
    db = opts.workdir / f"prior-{profile.name}.sqlite3"
    policy = policy_for(OURS, {})
    await run_jobs(profile, OURS, opts, seed=args.seed + 1000, db=db, count=args.train, policy=policy)
    async with await SQLiteJobStore.open(db) as store:
        timings = await store.recent_timings(EmulatorConfig().model_id, limit=args.train)
    levels = [(i + 0.5) / points for i in range(points)]

    def quantiles(values: list[float]) -> str:
        return " ".join(f"{percentile(values, 100 * q):.2f}" for q in levels)

    speed = policy.seconds_per_position if isinstance(policy, AdaptivePolicy) else None
    return (
        f"# {len(timings)} jobs of the {profile.name} profile ({profile.describe()})\n"
        f'queue=_seconds("{quantiles([t.queue_seconds for t in timings])}"),\n'
        f'run=_seconds("{quantiles([t.run_seconds for t in timings])}"),\n'
        f"seconds_per_position={speed if speed is None else round(speed, 2)},"
    )


def forget_queue_speed(db: Path) -> None:
    """Drop what the last manager saved about the queue's speed, as an install without that memory would."""
    import sqlite3

    if db.exists():
        with sqlite3.connect(db) as connection:
            connection.execute("DELETE FROM polling_memory")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.first_jobs", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--profiles", default="typical", help="comma-separated (default: typical)")
    add("--installs", type=int, default=40, help="fresh installs (seeds) per profile (default 40)")
    add("--jobs", type=int, default=24, help="jobs per install (default 24)")
    add("--seed", type=int, default=1, help="first seed; install i uses seed + i (default 1)")
    add("--gap", type=float, default=0.5, help="mean seconds between arrivals (exponential; default 0.5)")
    add("--scale", type=float, default=20.0, help="virtual seconds per real second while idle (default 20)")
    add("--restart", action="store_true", help="train each install on --train jobs, then restart the manager")
    add("--train", type=int, default=24, help="jobs before the restart, or for --derive-prior (default 24)")
    add("--forget-queue-speed", action="store_true", help="with --restart: the new manager starts without it")
    add("--derive-prior", action="store_true", help="print what the policy records over --train jobs, and stop")
    add("--tag", default="", help="suffix for the output file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-first-jobs-"))
    opts = Options(args.jobs, 0, args.seed, args.gap, 5000.0, 0.0, workdir, {})
    if args.derive_prior:
        for name in args.profiles.split(","):
            print(run_virtual(partial(derive_prior, PROFILES[name], opts, args), args.scale))
        shutil.rmtree(workdir, ignore_errors=True)
        return 0
    mode = f"after a restart on {args.train} jobs" if args.restart else "on an empty database"
    print(f"first jobs {mode}: {args.installs} installs × {args.jobs} jobs, scale {args.scale:g}, seed {args.seed}")
    rows, dump = [], {}
    try:
        for name in args.profiles.split(","):
            profile = PROFILES[name]
            outcomes = [
                run_virtual(partial(one_install, profile, opts, seed, args), args.scale)
                for seed in range(args.seed, args.seed + args.installs)
            ]
            early, late = pools(outcomes)
            ratio = early.median / late.median
            print(f"  {name}: jobs 1-{FIRST} median {early.median:.3f} s, later {late.median:.3f} s", flush=True)
            rows.append(
                [name, early.median, late.median, ratio, early.calls_per_job, late.calls_per_job, len(early.delays)]
            )
            dump[name] = {"first": early.__dict__, "later": late.__dict__}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    headers = ["profile", f"jobs 1–{FIRST} median s", f"jobs {FIRST + 1}–{args.jobs} median s", "ratio"]
    headers += [f"jobs 1–{FIRST} calls/job", f"jobs {FIRST + 1}–{args.jobs} calls/job", f"jobs 1–{FIRST} measured"]
    print()
    print(table(headers, rows))
    suffix = f"-{args.tag}" if args.tag else ""
    (out_dir() / f"first_jobs{suffix}.json").write_text(json.dumps(dump))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
