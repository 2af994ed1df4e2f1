"""The operator's budget against a real store: what counts as spent, the caps, when they reset."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.jobs import Budget, Limit, LimitReachedError
from bot.jobs.budget import BudgetGuard
from storage.models import JobOrigin, JobState, NewJob
from storage.sqlite import SQLiteJobStore
from tests.clocks import MovableClock

ANY = tuple(JobState)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteJobStore]:
    async with await SQLiteJobStore.open(tmp_path / "jobs.sqlite3") as opened:
        yield opened


@pytest.fixture
def clock() -> MovableClock:
    clock = MovableClock()
    clock.offset = datetime(2026, 3, 14, 15, 0, tzinfo=UTC) - datetime.now(UTC)  # mid-month, mid-afternoon
    return clock


async def job(
    store: SQLiteJobStore,
    at: datetime,
    state: JobState,
    *,
    cost: float | None = None,
    sent: bool = True,
    guild: int = 1,
) -> None:
    made = await store.create(NewJob("m", "p", "1:1", 1, JobOrigin(guild_id=guild, user_id=2)), now=at)
    if state is JobState.DELIVERED:  # made: through `completed`, as the manager moves it
        await store.transition(made.id, JobState.COMPLETED, expect=ANY, now=at, request_id="r", cost_usd=cost)
    await store.transition(made.id, state, expect=ANY, now=at, request_id="r" if sent else None, cost_usd=cost)


async def test_every_job_that_may_be_billed_counts_from_the_moment_it_is_written(
    store: SQLiteJobStore, clock: MovableClock
) -> None:
    now = clock.now()
    await job(store, now, JobState.DELIVERED, cost=0.03)
    await job(store, now, JobState.WAITING, sent=False)  # about to be made
    await job(store, now, JobState.IN_PROGRESS)  # running, billed, no cost known yet
    await job(store, now, JobState.FAILED)  # failed after RunComfy took it: may be billed
    await job(store, now, JobState.CANCELLED)  # never billed
    await job(store, now, JobState.FAILED, sent=False)  # never reached RunComfy
    await job(store, now - timedelta(days=1), JobState.DELIVERED, cost=0.05)  # yesterday: this month only
    await job(store, now - timedelta(days=20), JobState.DELIVERED, cost=0.07)  # last month
    await job(store, now, JobState.DELIVERED, cost=0.03, guild=99)  # another server counts too
    guard = BudgetGuard(store, clock, Budget(images_per_day=10), lambda: 0.02)
    state = await guard.state()
    assert (state.today.images, round(state.today.cost_usd, 4), state.today.unpriced) == (5, 0.06, 3)
    assert round(state.spent_today, 4) == 0.12  # the unpriced three at the base price
    assert (state.month.images, round(state.month.cost_usd, 4)) == (6, 0.11)
    assert state.day_resets == datetime(2026, 3, 15, tzinfo=UTC)
    assert state.month_resets == datetime(2026, 4, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("budget", "limit", "resets"),
    [
        (Budget(images_per_day=3), Limit.BOT_IMAGES, datetime(2026, 3, 15, tzinfo=UTC)),
        (Budget(usd_per_day=0.10), Limit.BOT_DAY_USD, datetime(2026, 3, 15, tzinfo=UTC)),
        (Budget(usd_per_month=0.20), Limit.BOT_MONTH_USD, datetime(2026, 4, 1, tzinfo=UTC)),
    ],
)
async def test_each_cap_refuses_the_job_that_would_pass_it_and_says_when_it_resets(
    store: SQLiteJobStore, clock: MovableClock, budget: Budget, limit: Limit, resets: datetime
) -> None:
    guard = BudgetGuard(store, clock, budget, lambda: 0.03)
    now = clock.now()
    await job(store, now - timedelta(days=3), JobState.DELIVERED, cost=0.09)  # this month, not today
    for _ in range(2):
        await job(store, now, JobState.DELIVERED, cost=0.03)
        await guard.check()
    await job(store, now, JobState.DELIVERED, cost=0.03)
    with pytest.raises(LimitReachedError) as refused:
        await guard.check()
    assert refused.value.limit is limit
    assert refused.value.frees_at == resets
    clock.advance((resets - clock.now()).total_seconds() + 1)
    await guard.check()  # a new day (or month): room again


async def test_no_budget_means_no_query_and_no_refusal(store: SQLiteJobStore, clock: MovableClock) -> None:
    guard = BudgetGuard(store, clock, Budget(), lambda: None)
    for _ in range(5):
        await job(store, clock.now(), JobState.DELIVERED, cost=100.0)
    await guard.check()
    assert guard.last is None


async def test_pruned_jobs_still_count_this_month(store: SQLiteJobStore, clock: MovableClock) -> None:
    now = clock.now()
    await job(store, now - timedelta(days=2), JobState.DELIVERED, cost=0.5)
    before = (await BudgetGuard(store, clock, Budget(usd_per_month=1.0), lambda: None).state()).month
    assert await store.prune(before=now - timedelta(days=1)) == 1
    after = (await BudgetGuard(store, clock, Budget(usd_per_month=1.0), lambda: None).state()).month
    assert (after.images, round(after.cost_usd, 6)) == (before.images, round(before.cost_usd, 6)) == (1, 0.5)
