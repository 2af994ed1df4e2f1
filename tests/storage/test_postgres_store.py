"""What only the PostgreSQL store has: several pools on one database, a server that goes away, secret URLs.

Every test here talks to the real server the session started (tests/pgserver.py).
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import sys
from pathlib import Path

import asyncpg
import pytest

from storage.columns import UNFINISHED_WHERE
from storage.models import JobState
from storage.open import open_store
from storage.postgres.budget import SharedRequestBudget
from storage.postgres.connect import redact_url, scrub
from storage.postgres.jobs import UNFINISHED_SQL, PostgresJobStore
from storage.postgres.reports import UNFINISHED_COUNT_SQL
from storage.sqlite import SQLiteJobStore, StoreUnavailableError
from tests.pgserver import PostgresServer, find_bindir
from tests.storage.test_job_store import ORIGIN, at, new_job
from tests.storage.test_retention import GUILD, NOW, RETENTION, days_ago, history

pytestmark = pytest.mark.postgres

REPO_ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "s3cret-Pa55:w/rd"


def with_password(url: str) -> str:
    """`url` (postgresql://postgres@/db?host=...) with a password in its user part; trust auth ignores it."""
    return url.replace("postgres@", "postgres:s3cret-Pa55%3Aw%2Frd@", 1)


async def test_ids_are_never_reused(postgres_url: str) -> None:
    async with await PostgresJobStore.open(postgres_url) as store:
        first = await store.create(new_job(), now=at(0))
        second = await store.create(new_job(), now=at(1))
        raw = await asyncpg.connect(postgres_url)
        try:
            await raw.execute("DELETE FROM jobs WHERE id = $1", second.id)
        finally:
            await raw.close()
        third = await store.create(new_job(), now=at(2))
    assert first.id < second.id < third.id


async def test_live_job_queries_use_their_partial_indexes(postgres_url: str) -> None:
    # Guards against FINAL_STATES and the indexes in migrations_pg drifting apart; seq scans are
    # switched off because on an empty table the planner would rightly prefer one.
    raw = await asyncpg.connect(postgres_url)
    try:
        await raw.execute("SET enable_seqscan = off")
        plan = "\n".join(row[0] for row in await raw.fetch("EXPLAIN " + UNFINISHED_SQL))
        count = "\n".join(row[0] for row in await raw.fetch("EXPLAIN " + UNFINISHED_COUNT_SQL))
        guild = await raw.fetch(f"EXPLAIN SELECT id FROM jobs WHERE guild_id = 1 AND {UNFINISHED_WHERE}")  # noqa: S608
        channel = await raw.fetch(f"EXPLAIN SELECT id FROM jobs WHERE channel_id = 1 AND {UNFINISHED_WHERE}")  # noqa: S608
    finally:
        await raw.close()
    # Any partial index of live jobs serves (they share the WHERE); a full index or a seq scan would mean it drifted.
    assert re.search(r"Index.* on jobs_(guild_|channel_)?unfinished", plan), plan
    assert re.search(r"Index.* on jobs_(guild_|channel_)?unfinished", count), count
    assert "jobs_guild_unfinished" in "\n".join(row[0] for row in guild)
    assert "jobs_channel_unfinished" in "\n".join(row[0] for row in channel)


async def test_a_write_is_visible_to_another_process_when_the_method_returns(postgres_url: str) -> None:
    async with (
        await PostgresJobStore.open(postgres_url) as first,
        await PostgresJobStore.open(postgres_url) as second,
    ):
        created = await first.create(new_job(origin=ORIGIN), now=at(0))
        job = await first.transition(
            created.id, JobState.IN_QUEUE, expect=JobState.SUBMITTING, now=at(1), request_id="req-1"
        )
        assert job is not None
        assert await second.get(job.id) == job
        assert await second.by_request_id("req-1") == job


async def test_processes_pruning_at_once_delete_and_fold_each_job_once(postgres_url: str) -> None:
    # Every process prunes daily: a row is deleted, and folded by the trigger, once (SKIP LOCKED spreads the rows).
    stores = [await PostgresJobStore.open(postgres_url) for _ in range(3)]
    try:
        await history(stores[0])
        report = await stores[0].usage(GUILD, days_ago(365))
        pruned = await asyncio.gather(*(store.prune(before=NOW - RETENTION) for store in stores))
        assert sum(pruned) == 8
        for store in stores:
            assert await store.usage(GUILD, days_ago(365)) == report
    finally:
        for store in stores:
            await store.close()


CRASHING_WRITER = """
import asyncio, os, signal, sys
from datetime import UTC, datetime
from storage.models import JobOrigin, JobState, NewJob
from storage.postgres.jobs import PostgresJobStore

async def main():
    store = await PostgresJobStore.open(sys.argv[1])
    job = await store.create(NewJob("m", "crash", "1:1", 1, JobOrigin(interaction_token="t")), now=datetime.now(UTC))
    await store.transition(
        job.id, JobState.IN_QUEUE, expect=JobState.SUBMITTING, now=datetime.now(UTC), request_id="req-crash"
    )
    print(job.id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


async def test_a_write_survives_the_process_being_killed(postgres_url: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASHING_WRITER, postgres_url, cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE
    )
    stdout, _ = await process.communicate()
    assert process.returncode == -signal.SIGKILL
    async with await PostgresJobStore.open(postgres_url) as store:
        job = await store.by_request_id("req-crash")
        assert job is not None
        assert (job.id, job.state, job.origin.interaction_token) == (int(stdout), JobState.IN_QUEUE, "t")


async def test_a_closed_store_refuses_use_and_closes_twice(postgres_url: str) -> None:
    async with await PostgresJobStore.open(postgres_url) as store:
        await store.create(new_job(), now=at(0))
    with pytest.raises(asyncpg.InterfaceError, match="closed"):
        await store.get(1)
    await store.close()


async def test_a_server_that_goes_away_makes_the_store_unavailable_not_broken() -> None:
    server = PostgresServer.start(find_bindir())  # a server of its own, to stop under the store
    try:
        store = await PostgresJobStore.open(with_password(server.url("postgres")))
        try:
            job = await store.create(new_job(), now=at(0))
            server.stop()
            with pytest.raises(StoreUnavailableError) as caught:
                await store.get(job.id)
            with pytest.raises(StoreUnavailableError):
                await store.transition(job.id, JobState.FAILED, expect=JobState.SUBMITTING, now=at(1))
            with pytest.raises(StoreUnavailableError):
                await store.count_by_state()
        finally:
            await store.close()
    finally:
        server.stop()
    assert PASSWORD not in str(caught.value)
    assert "postgres:***@" in str(caught.value.path)


async def test_a_missing_database_is_unavailable_and_the_password_never_shows(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    missing = with_password(postgres_url.replace("/test_", "/missing_", 1)) + f"&password={PASSWORD}"
    with pytest.raises(StoreUnavailableError, match="does not exist") as caught:
        await open_store(database_url=missing, database_path=Path("unused.sqlite3"))
    shown = "\n".join([str(caught.value), repr(caught.value), str(caught.value.path), caplog.text])
    assert PASSWORD not in shown
    assert "s3cret" not in shown
    assert "password=***" in str(caught.value)


async def test_a_url_that_is_not_postgres_is_refused_without_its_password() -> None:
    with pytest.raises(ValueError, match="not a PostgreSQL URL") as caught:
        await PostgresJobStore.open(f"mysql://bot:{PASSWORD}@db.example/imagine")
    assert PASSWORD not in str(caught.value)
    with pytest.raises(ValueError, match="not usable") as caught:
        await PostgresJobStore.open(f"postgresql://bot:{PASSWORD}@db.example:notaport/imagine")
    assert PASSWORD not in str(caught.value)


def test_redact_url_hides_every_password_spelling() -> None:
    assert redact_url("postgresql://bot:pw@db:5432/imagine") == "postgresql://bot:***@db:5432/imagine"
    assert redact_url("postgresql://bot@db/imagine?password=pw&sslmode=require") == (
        "postgresql://bot@db/imagine?password=***&sslmode=require"
    )
    assert redact_url("postgresql://db/imagine") == "postgresql://db/imagine"
    assert redact_url("postgresql://bot:p%40ss@db/x") == "postgresql://bot:***@db/x"
    assert redact_url("postgresql://bot:raw/p@ss:w@db/x?host=/run") == "postgresql://bot:***@db/x?host=/run"
    assert redact_url("postgresql:///imagine?host=/run/postgresql") == "postgresql:///imagine?host=/run/postgresql"
    assert scrub("auth failed for p@ss and p%40ss", "postgresql://bot:p%40ss@db/x") == "auth failed for *** and ***"


async def test_open_store_picks_postgres_for_a_url_and_sqlite_otherwise(postgres_url: str, tmp_path: Path) -> None:
    postgres = await open_store(database_url=postgres_url, database_path=tmp_path / "unused.sqlite3")
    try:
        assert isinstance(postgres, PostgresJobStore)
        assert not (tmp_path / "unused.sqlite3").exists()
        budget = await SharedRequestBudget.open(postgres.pool, rate=1)  # the building blocks share its pool
        assert await budget.try_acquire() == 0
    finally:
        await postgres.close()
    sqlite = await open_store(database_url=None, database_path=tmp_path / "jobs.sqlite3")
    try:
        assert isinstance(sqlite, SQLiteJobStore)
        assert (tmp_path / "jobs.sqlite3").exists()
    finally:
        await sqlite.close()
