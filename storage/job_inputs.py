"""`SQLiteJobInputs`: the image an edit job starts from, kept with the job (migration 0009).

Discord's attachment links expire, so the bot downloads and verifies the
member's image when the command arrives and keeps its bytes here: details and
history can show what an edit started from long after the link died. The row
goes when the job does (ON DELETE CASCADE), so retention covers it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import aiosqlite

from storage.models import JobInput
from storage.sqlite_common import unavailable_on_error

_SAVE_SQL = "INSERT INTO job_inputs (job_id, content_type, width, height, data) VALUES (?, ?, ?, ?, ?)"
_READ_SQL = "SELECT content_type, width, height, data FROM job_inputs WHERE job_id = ?"


class JobInputs(Protocol):
    """What callers read; each store writes an input image as part of creating its job."""

    async def get(self, job_id: int) -> JobInput | None: ...


class SQLiteJobInputs:
    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path

    async def save(self, job_id: int, image: JobInput) -> None:
        with unavailable_on_error(self.path):
            await self._db.execute(_SAVE_SQL, (job_id, image.content_type, image.width, image.height, image.data))

    async def get(self, job_id: int) -> JobInput | None:
        with unavailable_on_error(self.path):
            rows = list(await self._db.execute_fetchall(_READ_SQL, (job_id,)))
        if not rows:
            return None
        content_type, width, height, data = rows[0]
        return JobInput(content_type, int(width), int(height), bytes(data))
