"""`SQLitePollingMemory`: what the polling policy learned that the jobs table cannot give back.

The policy rebuilds queue and run times at every start from finished jobs
(`recent_timings`), but the queue's speed, seconds per queue position learned
from positions counting down, is in no job row: without this store every
restart would poll queued jobs as if the queue's pace were unknown, and a
deep queue would cost looks until a countdown taught it again.

One row per model, over the job store's connection like `SQLiteGuildStore`;
every write is one statement, committed when the method returns. The value is
a hint, never a promise: a reader that finds none, or a write that fails,
costs a few polls, never a job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

import aiosqlite

from storage.sqlite_common import from_text, to_text, unavailable_on_error


@dataclass(frozen=True, slots=True)
class QueueSpeed:
    """Seconds per queue position for one model, and when it was last saved."""

    seconds_per_position: float
    updated_at: datetime


class PollingMemory(Protocol):
    """What the job manager reads at start and writes as the queue speed moves."""

    async def queue_speed(self, model: str) -> QueueSpeed | None: ...

    async def save_queue_speed(self, model: str, seconds_per_position: float, *, now: datetime) -> None: ...


def check_speed(seconds_per_position: float) -> float:
    """A speed SQLite will keep: a positive, finite number (the table's CHECK refuses the rest too)."""
    if isinstance(seconds_per_position, bool) or not isinstance(seconds_per_position, int | float):
        raise TypeError(f"seconds_per_position must be a number, got {type(seconds_per_position).__name__}")
    if not math.isfinite(seconds_per_position) or seconds_per_position <= 0:
        raise ValueError(f"seconds_per_position must be a positive number, got {seconds_per_position!r}")
    return float(seconds_per_position)


class SQLitePollingMemory:
    """The `polling_memory` table (migration 0007) over the job store's connection."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path

    async def queue_speed(self, model: str) -> QueueSpeed | None:
        """The last saved speed of `model`'s queue, or None when none was ever saved."""
        with unavailable_on_error(self.path):
            rows = list(
                await self._db.execute_fetchall(
                    "SELECT seconds_per_position, updated_at FROM polling_memory WHERE model = ?", (model,)
                )
            )
        if not rows:
            return None
        seconds, updated_at = rows[0]
        return QueueSpeed(float(seconds), from_text(updated_at))

    async def save_queue_speed(self, model: str, seconds_per_position: float, *, now: datetime) -> None:
        """Keep `seconds_per_position` as `model`'s queue speed, replacing what was there."""
        value = check_speed(seconds_per_position)
        with unavailable_on_error(self.path):
            await self._db.execute(
                "INSERT INTO polling_memory (model, seconds_per_position, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (model) DO UPDATE SET"
                " seconds_per_position = excluded.seconds_per_position, updated_at = excluded.updated_at",
                (model, value, to_text(now, "now")),
            )
