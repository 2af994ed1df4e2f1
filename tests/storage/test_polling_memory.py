"""The polling memory on real SQLite files: saved per model, replaced, kept across a reopen, bad values refused."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiosqlite
import pytest

from storage.polling_memory import QueueSpeed, SQLitePollingMemory
from storage.sqlite import SQLiteJobStore
from storage.sqlite_common import StoreUnavailableError

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
MODEL = "imagineart/imagineart-1.5-preview/text-to-image"


@pytest.fixture
async def memory(tmp_path: Path) -> AsyncIterator[SQLitePollingMemory]:
    """A memory over a connection to a database the job store created and migrated."""
    path = tmp_path / "imagine.sqlite3"
    await (await SQLiteJobStore.open(path)).close()
    async with aiosqlite.connect(path, isolation_level=None) as db:
        yield SQLitePollingMemory(db, path)


async def test_nothing_saved_reads_none(memory: SQLitePollingMemory) -> None:
    assert await memory.queue_speed(MODEL) is None


async def test_the_newest_speed_per_model_is_kept(memory: SQLitePollingMemory) -> None:
    await memory.save_queue_speed(MODEL, 2.0, now=T0)
    await memory.save_queue_speed("other/model", 5.0, now=T0)
    await memory.save_queue_speed(MODEL, 2.5, now=T0 + timedelta(minutes=1))
    assert await memory.queue_speed(MODEL) == QueueSpeed(2.5, T0 + timedelta(minutes=1))
    assert await memory.queue_speed("other/model") == QueueSpeed(5.0, T0)


async def test_a_saved_speed_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "imagine.sqlite3"
    async with await SQLiteJobStore.open(path) as store:
        await SQLitePollingMemory(store._db, store.path).save_queue_speed(MODEL, 1.75, now=T0)
    async with await SQLiteJobStore.open(path) as store:
        assert await SQLitePollingMemory(store._db, store.path).queue_speed(MODEL) == QueueSpeed(1.75, T0)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan])
async def test_speeds_that_mean_nothing_are_refused(memory: SQLitePollingMemory, bad: float) -> None:
    with pytest.raises(ValueError, match="positive number"):
        await memory.save_queue_speed(MODEL, bad, now=T0)
    assert await memory.queue_speed(MODEL) is None


async def test_a_naive_time_is_refused(memory: SQLitePollingMemory) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await memory.save_queue_speed(MODEL, 2.0, now=datetime(2026, 1, 1))  # noqa: DTZ001 (the point of the test)


async def test_a_read_only_database_is_the_store_error(tmp_path: Path) -> None:
    """Callers catch one exception for "the disk said no", as with the job store."""
    path = tmp_path / "imagine.sqlite3"
    await (await SQLiteJobStore.open(path)).close()
    async with aiosqlite.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None) as db:
        with pytest.raises(StoreUnavailableError):
            await SQLitePollingMemory(db, path).save_queue_speed(MODEL, 2.0, now=T0)
