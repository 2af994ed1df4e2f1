"""The jobs table as a chaos run reads it: around the store under test, from SQLite or PostgreSQL."""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg


@dataclass
class JobRow:
    id: int
    prompt: str
    state: str
    error: str | None
    delivery: str | None
    message_id: int | None
    request_id: str | None
    deliver_at: str | datetime | None  # TEXT in SQLite, timestamptz in PostgreSQL; only its presence matters


UNFINISHED = frozenset({"waiting", "submitting", "in_queue", "in_progress", "completed", "delivering"})


def unannounced(row: JobRow) -> bool:
    """A failed or cancelled job whose end is still owed to its member (not shown yet, nor given up)."""
    return row.state in ("failed", "cancelled") and row.deliver_at is not None


_JOB_COLUMNS = "id, prompt, state, error, delivery, message_id, request_id, deliver_at"


def read_jobs(database: Path) -> list[JobRow]:
    """Every job row, read with plain sqlite3 (not the store under test)."""
    if not database.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)) as db:
        rows = db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs ORDER BY id").fetchall()  # noqa: S608 - constants
    return [JobRow(*row) for row in rows]


async def read_jobs_postgres(pool: asyncpg.Pool) -> list[JobRow]:
    """Every job row, read with plain asyncpg (not the store under test)."""
    rows = await pool.fetch(f"SELECT {_JOB_COLUMNS} FROM jobs ORDER BY id")  # noqa: S608 - constants
    return [JobRow(*row) for row in rows]
