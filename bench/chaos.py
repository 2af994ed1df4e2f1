"""The long crash-kill chaos run: the real bot process SIGKILLed hundreds of times, several seeds.

    .venv/bin/python -m bench.chaos                                  # 3 seeds x 500 jobs, >= 100 kills each (~6 min)
    .venv/bin/python -m bench.chaos --seeds 1 --jobs 100 --kills 20  # what CI runs (tests/chaos/test_chaos.py)
    .venv/bin/python -m bench.chaos --uptime 0.05 0.3                # kills closer together
    .venv/bin/python -m bench.chaos --processes 3                    # 3 processes on PostgreSQL, 4 x 300 jobs (~8 min)
    .venv/bin/python -m bench.chaos --processes 3 --seeds 1 --jobs 100 --kills 10  # tests/chaos/test_processes.py

Same harness as the CI test (tests/chaos/harness.py): the fake Discord and the
RunComfy emulator in this process, `python -m bot run` as a subprocess pointed
at them, killed at random moments (some during its own startup) and restarted.
Each run checks every command against Discord's view, the emulator's submit
log and the database: nothing lost, nothing delivered twice, nothing sent to
RunComfy twice. Figures go to stdout and bench/out/chaos.json; the exit status
is 1 if any promise broke.

With `--processes N` it is the plan of tests/chaos/test_processes.py, longer:
N processes (one shard each of N) on one PostgreSQL database that this
benchmark starts (tests/pgserver.py: initdb in a temp folder, a unix socket),
a fresh database per seed, one process at a time SIGKILLed and restarted. On
top of the promises above, every job a dead process held must be taken over by
another process (or its own restart); how long that took (SIGKILL -> claimed,
meant to be within LEASE_SECONDS) is printed, pooled over all seeds at the
end, and not part of the exit status. Figures go to bench/out/chaos-processes.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench.common import out_dir, percentile
from tests.chaos.fakes import world
from tests.chaos.harness import ChaosRun
from tests.chaos.plan import THREE_PROCESSES, ChaosPlan
from tests.chaos.processes_run import ProcessesChaosRun
from tests.chaos.report import ChaosReport
from tests.pgserver import PostgresServer, find_bindir


async def run_one(plan: ChaosPlan, keep: Path | None, server: PostgresServer | None) -> ChaosReport:
    with tempfile.TemporaryDirectory(prefix="chaos-") as scratch:
        workdir = keep / f"seed-{plan.seed}" if keep else Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        async with world(plan) as chaos_world:
            if server is None:
                return await ChaosRun(plan, chaos_world, workdir).run()
            async with server.database() as url:  # empty: the first process to start migrates it
                return await ProcessesChaosRun(plan, chaos_world, workdir, url).run()


@contextlib.contextmanager
def postgres(wanted: bool) -> Iterator[PostgresServer | None]:
    """A PostgreSQL server of our own for the run (none for one process, which uses SQLite)."""
    if not wanted:
        yield None
        return
    server = PostgresServer.start(find_bindir())
    try:
        yield server
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=1, help="bot processes on one PostgreSQL (default 1: SQLite)")
    parser.add_argument("--seeds", type=int, default=None, help="how many seeds to run, from --first-seed (3; 4)")
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=None, help="commands per seed (500; with --processes, 300)")
    parser.add_argument("--kills", type=int, default=None, help="at least this many SIGKILLs per run (100; 30)")
    parser.add_argument("--uptime", type=float, nargs=2, default=None, metavar=("MIN", "MAX"))
    parser.add_argument("--startup-kill-share", type=float, default=None)
    parser.add_argument("--command-gap", type=float, default=None, help="mean seconds between commands")
    parser.add_argument("--keep", type=Path, default=None, help="keep databases and bot logs under this folder")
    args = parser.parse_args(argv)

    several = args.processes > 1
    # One process: the defaults of ChaosPlan; several: the CI plan of tests/chaos/test_processes.py, longer.
    base = dataclasses.replace(THREE_PROCESSES, processes=args.processes) if several else ChaosPlan()
    defaults = {"seeds": 4, "jobs": 300, "kills": 30} if several else {"seeds": 3, "jobs": 500, "kills": 100}
    reports = []
    with postgres(several) as server:
        for seed in range(args.first_seed, args.first_seed + (args.seeds or defaults["seeds"])):
            share = args.startup_kill_share
            plan = dataclasses.replace(
                base,
                seed=seed,
                jobs=args.jobs or defaults["jobs"],
                min_kills=args.kills or defaults["kills"],
                uptime=(args.uptime[0], args.uptime[1]) if args.uptime else base.uptime,
                startup_kill_share=base.startup_kill_share if share is None else share,
                command_gap=args.command_gap or base.command_gap,
                settle_timeout=330.0,  # past the delivery backoff cap, as tests/chaos/plan.py says
            )
            report = asyncio.run(run_one(plan, args.keep, server))
            print(report.text(), flush=True)
            reports.append(report)

    figures = [report.figures() | {"problems": report.problems} for report in reports]
    path = out_dir() / ("chaos-processes.json" if several else "chaos.json")
    totals: dict[str, object] = {
        key: sum(f[key] for f in figures)
        for key in ("kills", "commands", "acknowledged", "delivered", "failed_not_sent_again", "lost")
    }
    if several:
        delays = [delay for report in reports for delay in report.take_over_delays]
        totals |= {
            "orphaned_jobs": sum(len(report.takeovers) for report in reports),
            "taken_over_by_the_restart": sum(f["taken_over_by_the_restart"] for f in figures),
            "take_over_p50_s": round(percentile(delays, 50), 2),
            "take_over_p95_s": round(percentile(delays, 95), 2),
            "take_over_max_s": round(max(delays, default=float("nan")), 2),
        }
    path.write_text(json.dumps({"runs": figures, "totals": totals}, indent=2) + "\n")
    broken = sum(len(report.problems) for report in reports)
    print(f"total over {len(reports)} runs: {totals}; broken promises: {broken}; figures in {path}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
