"""The promise under SIGKILL: every acknowledged /imagine ends delivered once, or clearly failed, never paid twice.

`.venv/bin/pytest -m chaos` runs these alone; `python -m bench.chaos` runs longer plans.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.chaos.harness import ChaosPlan, ChaosRun, world

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
    assert not report.problems, f"{report.text()}\n--- last bot logs ---\n{run.log_tail()}"
    assert report.kills >= plan.min_kills
    assert report.commands == plan.jobs
    assert report.lost == 0
    assert report.duplicate_final_edits == report.duplicate_result_messages == 0
    assert report.double_submits == 0
    assert report.replies_not_final == 0
    assert report.acknowledged == report.delivered + report.failed_not_resent
    assert report.acknowledged >= plan.jobs * 0.6, "too few commands met a running bot to prove anything"
