"""Retention: old finished jobs are deleted, usage reports do not notice, live jobs are counted from the index.

Each test that takes `store` runs against SQLite and PostgreSQL (tests/storage/conftest.py).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiosqlite
import asyncpg
import pytest

from storage import retention
from storage.models import JobOrigin, JobState, NewJob
from storage.open import AnyJobStore
from storage.postgres import reports
from storage.sqlite import SQLiteJobStore

NOW = datetime(2025, 6, 30, 15, 30, tzinfo=UTC)
GUILD, OTHER_GUILD = 2**62, 2**62 + 1
ALICE, BOB, CAROL = 11, 12, 13
RETENTION = timedelta(days=90)


def days_ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def new_job(user: int | None, guild: int | None, parent_id: int | None = None) -> NewJob:
    origin = JobOrigin(guild_id=guild, channel_id=5 if guild else None, user_id=user)
    return NewJob("m", "a prompt", "1:1", 1, origin, parent_id=parent_id)


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteJobStore]:
    opened = await SQLiteJobStore.open(tmp_path / "jobs.sqlite3")
    yield opened
    await opened.close()


async def made(
    store: AnyJobStore,
    age_days: float,
    *,
    user: int | None = ALICE,
    guild: int | None = GUILD,
    cost: float | None = 0.03,
    estimated: bool = False,
    end: JobState = JobState.DELIVERED,
    parent_id: int | None = None,
) -> int:
    """A job that completed `age_days` ago (and was delivered a minute later), priced `cost`."""
    when = days_ago(age_days)
    job = await store.create(new_job(user, guild, parent_id), now=when - timedelta(minutes=2))
    await store.transition(
        job.id, JobState.IN_QUEUE, expect=tuple(JobState), now=when - timedelta(minutes=1), request_id=f"r{job.id}"
    )
    await store.transition(
        job.id, JobState.COMPLETED, expect=tuple(JobState), now=when, cost_usd=cost, cost_estimated=estimated
    )
    if end is not JobState.COMPLETED:
        await store.transition(job.id, end, expect=tuple(JobState), now=when + timedelta(minutes=1))
    return job.id


async def history(store: AnyJobStore) -> dict[str, int]:
    """A server's year: old and recent images, every kind of price, members, the CLI, failures, live jobs."""
    ids: dict[str, int] = {}
    ids["old alice"] = await made(store, 200, cost=0.03)
    await made(store, 200, cost=0.03)  # the same day again
    await made(store, 200, user=BOB, cost=0.031, estimated=True)
    await made(store, 150.5, user=BOB, cost=None)
    await made(store, 120, user=CAROL, cost=0.1, end=JobState.FAILED)  # completed, then delivery failed
    await made(store, 95, guild=OTHER_GUILD, cost=0.5)
    await made(store, 100, user=None, guild=None, cost=0.2)  # `python -m bot generate`
    ids["old never sent"] = (await store.create(new_job(ALICE, GUILD), now=days_ago(300))).id
    await store.transition(ids["old never sent"], JobState.FAILED, expect=tuple(JobState), now=days_ago(300))
    ids["recent"] = await made(store, 10, cost=0.03)
    ids["reroll of old"] = await made(store, 5, cost=0.03, parent_id=ids["old alice"])
    await made(store, 1, user=BOB, cost=0.07)
    ids["old but stuck"] = (await store.create(new_job(ALICE, GUILD), now=days_ago(400))).id
    await store.transition(
        ids["old but stuck"], JobState.IN_QUEUE, expect=tuple(JobState), now=days_ago(400), request_id="stuck"
    )
    return ids


async def test_a_usage_report_is_the_same_before_and_after_pruning(store: AnyJobStore) -> None:
    await history(store)
    windows = [days_ago(365), days_ago(160), days_ago(90), days_ago(7)]
    before = {since: await store.usage(GUILD, since) for since in windows}
    other_before = await store.usage(OTHER_GUILD, days_ago(365))

    pruned = await store.prune(before=NOW - RETENTION)

    assert pruned == 8  # every final job older than 90 days; the stuck one stays
    for since in windows:
        assert await store.usage(GUILD, since) == before[since], since
    assert await store.usage(OTHER_GUILD, days_ago(365)) == other_before
    assert await store.prune(before=NOW - RETENTION) == 0
    for since in windows:
        assert await store.usage(GUILD, since) == before[since], since


async def test_the_report_still_has_the_pruned_days_and_members(store: AnyJobStore) -> None:
    await history(store)
    await store.prune(before=NOW - RETENTION)
    report = await store.usage(GUILD, days_ago(365))
    assert [(day.day, day.images, day.cost_usd, day.estimated, day.unpriced) for day in report.days] == [
        ("2024-12-12", 3, 0.091, 1, 0),
        ("2025-01-31", 1, 0.0, 0, 1),
        ("2025-03-02", 1, 0.1, 0, 0),
        ("2025-06-20", 1, 0.03, 0, 0),
        ("2025-06-25", 1, 0.03, 0, 0),
        ("2025-06-29", 1, 0.07, 0, 0),
    ]
    assert [(m.user_id, m.images, m.cost_usd) for m in report.members] == [
        (ALICE, 4, 0.12),
        (BOB, 3, 0.101),
        (CAROL, 1, 0.1),
    ]


async def test_pruning_keeps_live_and_recent_jobs_and_unlinks_rerolls(store: AnyJobStore) -> None:
    ids = await history(store)
    await store.prune(before=NOW - RETENTION)
    assert await store.get(ids["old alice"]) is None
    assert await store.get(ids["old never sent"]) is None
    stuck = await store.get(ids["old but stuck"])
    assert stuck is not None
    assert stuck.state is JobState.IN_QUEUE
    assert await store.get(ids["recent"]) is not None
    reroll = await store.get(ids["reroll of old"])
    assert reroll is not None
    assert reroll.parent_id is None


async def test_jobs_without_a_server_are_folded_under_zero(store: AnyJobStore) -> None:
    await made(store, 100, user=None, guild=None, cost=0.2)
    await store.prune(before=NOW - RETENTION)
    sql = "SELECT guild_id, user_id, day, images, cost_nanousd FROM usage_totals"
    if isinstance(store, SQLiteJobStore):
        with sqlite3.connect(store.path) as raw:
            rows = raw.execute(sql).fetchall()
        raw.close()
    else:
        rows = [(*row[:2], row[2].isoformat(), *row[3:]) for row in await store.pool.fetch(sql)]  # day is a DATE
    assert rows == [(0, 0, "2025-03-22", 1, 200_000_000)]


async def test_a_large_prune_runs_in_batches_on_any_connection(store: AnyJobStore) -> None:
    for age in range(100, 107):
        await made(store, age, cost=0.01)
    report = await store.usage(GUILD, days_ago(365))
    if isinstance(store, SQLiteJobStore):
        async with aiosqlite.connect(store.path, isolation_level=None) as db:
            await db.execute("PRAGMA foreign_keys = ON")
            assert await retention.prune(db, store.path, before=NOW - RETENTION, batch=3) == 7
    else:
        async with store.pool.acquire() as conn:  # any connection: the trigger folds, not the store
            assert len(await conn.fetch("DELETE FROM jobs WHERE finished_at < $1 RETURNING id", days_ago(103))) == 3
        assert await reports.prune(store.pool, before=NOW - RETENTION, batch=2) == 4
    assert await store.usage(GUILD, days_ago(365)) == report
    assert sum((await store.count_by_state()).values()) == 0


async def test_unfinished_counts_match_a_full_count(store: AnyJobStore) -> None:
    await history(store)
    waiting = await store.create(new_job(BOB, GUILD), now=NOW, state=JobState.WAITING)
    await store.create(new_job(CAROL, GUILD), now=NOW)
    counts = await store.count_unfinished_by_state()
    full = await store.count_by_state()
    assert counts == {state: count for state, count in full.items() if not state.is_final}
    assert (counts[JobState.WAITING], counts[JobState.SUBMITTING], counts[JobState.IN_QUEUE]) == (1, 1, 1)
    assert waiting.state is JobState.WAITING


async def test_the_unfinished_count_reads_a_partial_index_of_live_jobs(sqlite_store: SQLiteJobStore) -> None:
    """Any partial index on the unfinished clause (jobs_unfinished, jobs_guild_unfinished, ...) holds live rows only."""
    with sqlite3.connect(sqlite_store.path) as raw:
        plan = " ".join(str(row) for row in raw.execute("EXPLAIN QUERY PLAN " + retention.UNFINISHED_COUNT_SQL))
    raw.close()
    assert re.search(r"USING (COVERING )?INDEX jobs_(guild_|channel_)?unfinished", plan), plan


@pytest.mark.postgres
async def test_postgres_rounds_each_cost_as_sqlite_does(postgres_url: str) -> None:
    """Folded totals and live sums must be the same integers on both backends, halves and float noise included."""
    costs = [None, 0.0, 0.03, 0.031, 0.1 + 0.2, 2.5e-9, 1.5e-9, 0.5e-9, 1.0000000005, 0.0305, 12.3456789125, -2.5e-9]
    with sqlite3.connect(":memory:") as raw:
        expected = [
            raw.execute("SELECT CAST(round(coalesce(?, 0) * 1e9) AS INTEGER)", (c,)).fetchone()[0] for c in costs
        ]
    raw.close()
    conn = await asyncpg.connect(postgres_url)
    try:
        assert [await conn.fetchval("SELECT nanousd($1)", cost) for cost in costs] == expected
    finally:
        await conn.close()
