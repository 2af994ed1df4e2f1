"""The long crash-kill chaos run: the real bot process SIGKILLed hundreds of times, several seeds.

    .venv/bin/python -m bench.chaos                                  # 3 seeds x 500 jobs, >= 100 kills each (~6 min)
    .venv/bin/python -m bench.chaos --seeds 1 --jobs 100 --kills 20  # what CI runs (tests/chaos/test_chaos.py)
    .venv/bin/python -m bench.chaos --uptime 0.05 0.3                # kills closer together

Same harness as the CI test (tests/chaos/harness.py): the fake Discord and the
RunComfy emulator in this process, `python -m bot run` as a subprocess pointed
at them, killed at random moments (some during its own startup) and restarted.
Each run checks every command against Discord's view, the emulator's submit
log and the database: nothing lost, nothing delivered twice, nothing sent to
RunComfy twice. Figures go to stdout and bench/out/chaos.json; the exit status
is 1 if any promise broke.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

from bench.common import out_dir
from tests.chaos.harness import ChaosPlan, ChaosReport, ChaosRun, world


async def run_one(plan: ChaosPlan, keep: Path | None) -> ChaosReport:
    with tempfile.TemporaryDirectory(prefix="chaos-") as scratch:
        workdir = keep / f"seed-{plan.seed}" if keep else Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        async with world(plan) as chaos_world:
            return await ChaosRun(plan, chaos_world, workdir).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="how many seeds to run, from --first-seed")
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--kills", type=int, default=100, help="at least this many SIGKILLs per run")
    parser.add_argument("--uptime", type=float, nargs=2, default=(0.3, 0.6), metavar=("MIN", "MAX"))
    parser.add_argument("--startup-kill-share", type=float, default=0.2)
    parser.add_argument("--command-gap", type=float, default=0.08, help="mean seconds between commands")
    parser.add_argument("--keep", type=Path, default=None, help="keep databases and bot logs under this folder")
    args = parser.parse_args(argv)

    reports = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        plan = ChaosPlan(
            jobs=args.jobs,
            min_kills=args.kills,
            seed=seed,
            uptime=tuple(args.uptime),
            startup_kill_share=args.startup_kill_share,
            command_gap=args.command_gap,
            settle_timeout=180.0,
        )
        report = asyncio.run(run_one(plan, args.keep))
        print(report.text(), flush=True)
        reports.append(report)

    figures = [report.figures() | {"problems": report.problems} for report in reports]
    path = out_dir() / "chaos.json"
    path.write_text(json.dumps({"runs": figures}, indent=2) + "\n")
    totals = {
        key: sum(f[key] for f in figures)
        for key in ("kills", "commands", "acknowledged", "delivered", "failed_not_sent_again", "lost")
    }
    broken = sum(len(report.problems) for report in reports)
    print(f"total over {len(reports)} runs: {totals}; broken promises: {broken}; figures in {path}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
