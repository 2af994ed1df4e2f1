"""`SQLiteJobInputs`: the image an edit job starts from, stored once for every job made from it.

Discord's attachment links expire, so the bot downloads and verifies the
member's image when the command arrives and keeps its bytes here: details and
history can show what an edit started from long after the link died. Rerolls
and remixes of an edit name the same stored image (`jobs.input_image_id`,
migration 0010) rather than copying it. The foreign key keeps an image while
any job names it; retention deletes it once none does (storage/retention.py).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Protocol

import aiosqlite

from storage.models import JobInput
from storage.sqlite_common import to_text, unavailable_on_error

_ADD_SQL = (
    "INSERT INTO input_images (created_at, content_type, width, height, data) VALUES (?, ?, ?, ?, ?) RETURNING id"
)
_READ_SQL = (
    "SELECT content_type, width, height, data FROM input_images"
    " WHERE id = (SELECT input_image_id FROM jobs WHERE id = ?)"
)


class JobInputs(Protocol):
    """An edit's image: stored with its job when it is already in (`create`), or on its own once downloaded, for
    the job written before the download to name (`add`, then the job's `input_image_id`)."""

    async def add(self, image: JobInput, *, now: datetime) -> int: ...

    async def get(self, job_id: int) -> JobInput | None: ...


class SQLiteJobInputs:
    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path

    async def add(self, image: JobInput, *, now: datetime) -> int:
        """Store a new image, stamped `now` (its first job's created_at); its id."""
        values = (to_text(now, "now"), image.content_type, image.width, image.height, image.data)
        with unavailable_on_error(self.path):
            rows = list(await self._db.execute_fetchall(_ADD_SQL, values))
        return int(rows[0][0])

    async def get(self, job_id: int) -> JobInput | None:
        """The image the job starts from (shared or its own), or None for a job with none."""
        with unavailable_on_error(self.path):
            rows = list(await self._db.execute_fetchall(_READ_SQL, (job_id,)))
        if not rows:
            return None
        content_type, width, height, data = rows[0]
        return JobInput(content_type, int(width), int(height), bytes(data))
