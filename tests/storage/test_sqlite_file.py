"""What only the SQLite store has: a file, its pragmas and WAL, read-only opens, locks, and a killed writer."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from storage.models import JobState
from storage.sqlite import UNFINISHED_SQL, SQLiteJobStore, StoreUnavailableError
from tests.storage.test_job_store import ORIGIN, at, new_job

REPO_ROOT = Path(__file__).resolve().parents[2]


def file_bytes(path: Path) -> bytes:
    return path.read_bytes()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "jobs.sqlite3"  # "data" does not exist yet: open() creates it


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SQLiteJobStore]:
    store = await SQLiteJobStore.open(db_path)
    yield store
    await store.close()


async def test_ids_are_never_reused(store: SQLiteJobStore, db_path: Path) -> None:
    first = await store.create(new_job(), now=at(0))
    second = await store.create(new_job(), now=at(1))
    with sqlite3.connect(db_path) as raw:
        raw.execute("DELETE FROM jobs WHERE id = ?", (second.id,))
    raw.close()
    third = await store.create(new_job(), now=at(2))
    assert (first.id, second.id, third.id) == (1, 2, 3)


async def test_unfinished_query_uses_the_partial_index(store: SQLiteJobStore, db_path: Path) -> None:
    # Guards against FINAL_STATES and the index in 0001_jobs.sql drifting apart.
    with sqlite3.connect(db_path) as raw:
        plan = " ".join(str(row) for row in raw.execute("EXPLAIN QUERY PLAN " + UNFINISHED_SQL))
    raw.close()
    assert "jobs_unfinished" in plan


async def test_async_with_closes_the_store(db_path: Path) -> None:
    async with await SQLiteJobStore.open(db_path) as store:
        await store.create(new_job(), now=at(0))
    with pytest.raises(ValueError, match="closed"):
        await store.get(1)
    await store.close()  # closing twice is harmless


async def test_wal_mode_is_on(store: SQLiteJobStore, db_path: Path) -> None:
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    raw.close()


async def test_connection_pragmas_keep_the_durability_promise(store: SQLiteJobStore) -> None:
    # Per-connection settings, so they can only be read through the store's own connection.
    async def pragma(name: str) -> object:
        rows = list(await store._db.execute_fetchall(f"PRAGMA {name}"))
        return rows[0][0]

    assert await pragma("synchronous") == 2  # FULL
    assert await pragma("foreign_keys") == 1
    assert await pragma("busy_timeout") == 5000


async def test_a_write_is_on_disk_when_the_method_returns(db_path: Path) -> None:
    first = await SQLiteJobStore.open(db_path)
    try:
        created = await first.create(new_job(origin=ORIGIN), now=at(0))
        job = await first.transition(
            created.id, JobState.IN_QUEUE, expect=JobState.SUBMITTING, now=at(1), request_id="req-1"
        )
        assert job is not None
        # The first store is still open: nothing was flushed by closing it.
        second = await SQLiteJobStore.open(db_path)
        try:
            assert await second.get(job.id) == job
        finally:
            await second.close()
        with sqlite3.connect(db_path) as raw:
            assert raw.execute("SELECT state FROM jobs WHERE id = ?", (job.id,)).fetchone() == ("in_queue",)
        raw.close()
    finally:
        await first.close()
    async with await SQLiteJobStore.open(db_path) as reopened:
        assert await reopened.get(job.id) == job


CRASHING_WRITER = """
import asyncio, os, signal, sys
from datetime import UTC, datetime
from pathlib import Path
from storage.models import JobOrigin, JobState, NewJob
from storage.sqlite import SQLiteJobStore

async def main():
    store = await SQLiteJobStore.open(Path(sys.argv[1]))
    job = await store.create(NewJob("m", "crash", "1:1", 1, JobOrigin(interaction_token="t")), now=datetime.now(UTC))
    now = datetime.now(UTC)
    await store.transition(job.id, JobState.IN_QUEUE, expect=JobState.SUBMITTING, now=now, request_id="req-crash")
    print(job.id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


async def test_a_write_survives_the_process_being_killed(db_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASHING_WRITER, str(db_path), cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE
    )
    stdout, _ = await process.communicate()
    assert process.returncode == -signal.SIGKILL
    job_id = int(stdout)
    assert db_path.with_name(db_path.name + "-wal").stat().st_size > 0, "the rows live in the WAL, never checkpointed"

    async with await SQLiteJobStore.open(db_path) as store:
        job = await store.by_request_id("req-crash")
        assert job is not None
        assert (job.id, job.state, job.origin.interaction_token) == (job_id, JobState.IN_QUEUE, "t")


async def test_read_only_store_reads_but_refuses_writes(db_path: Path) -> None:
    async with await SQLiteJobStore.open(db_path) as store:
        job = await store.create(new_job(), now=at(0))
    before = file_bytes(db_path)

    async with await SQLiteJobStore.open(db_path, read_only=True) as readonly:
        assert readonly.read_only
        assert await readonly.get(job.id) == job
        with pytest.raises(StoreUnavailableError, match="readonly") as caught:
            await readonly.create(new_job(), now=at(1))
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
        assert caught.value.path == db_path
        with pytest.raises(StoreUnavailableError):
            await readonly.transition(job.id, JobState.FAILED, expect=JobState.SUBMITTING, now=at(1))
        with pytest.raises(StoreUnavailableError):
            await readonly.once("reroll:1:2", now=at(1), window=timedelta(seconds=10))
    assert file_bytes(db_path) == before


async def test_opening_a_missing_file_read_only_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailableError, match="unable to open"):
        await SQLiteJobStore.open(tmp_path / "missing.sqlite3", read_only=True)
    assert not (tmp_path / "missing.sqlite3").exists()


async def test_a_locked_database_is_unavailable_not_lost(db_path: Path) -> None:
    async with await SQLiteJobStore.open(db_path, busy_timeout_ms=50) as store:
        blocker = sqlite3.connect(db_path, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreUnavailableError, match="locked"):
                await store.create(new_job(), now=at(0))
            blocker.execute("ROLLBACK")
        finally:
            blocker.close()
        job = await store.create(new_job(), now=at(1))
        assert job.id == 1
