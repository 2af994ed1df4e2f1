"""The promise under SIGKILL: every acknowledged /imagine ends delivered once, or clearly failed, never paid twice.

`.venv/bin/pytest -m chaos` runs these alone; `python -m bench.chaos` runs longer plans.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.chaos.fakes import world
from tests.chaos.harness import ChaosRun
from tests.chaos.plan import ChaosPlan
from tests.chaos.verdict import assert_promises_kept

pytestmark = pytest.mark.chaos


@pytest.mark.timeout(240)
async def test_sigkill_at_random_moments_loses_and_doubles_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = ChaosPlan(jobs=100, min_kills=20)
    async with world(plan) as chaos_world:
        run = ChaosRun(plan, chaos_world, tmp_path)
        report = await run.run()
    with capsys.disabled():  # the figures belong in the CI log, passing or not
        sys.stdout.write(f"\n{report.text()}\n")
    assert_promises_kept(report, run)
