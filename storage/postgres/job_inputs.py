"""`PostgresJobInputs`: an edit job's input image in the jobs' database (`storage/job_inputs.py` says why).

A new image that is already in when its job is written goes in by the job's own INSERT
(`PostgresJobStore.create`); one downloaded after its job was written is added here, for the job to name.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from storage.job_inputs import _ADD_SQL as _SQLITE_ADD
from storage.job_inputs import _READ_SQL as _SQLITE_READ
from storage.models import JobInput
from storage.postgres.connect import aware, unavailable_on_error

if TYPE_CHECKING:
    from storage.job_inputs import JobInputs
    from storage.postgres.connect import Pool


def _numbered(sql: str) -> str:
    """SQLite's `?` placeholders as asyncpg's `$1, $2, …` (the statements are otherwise the same)."""
    parts = sql.split("?")
    return "".join(part + (f"${index}" if index < len(parts) else "") for index, part in enumerate(parts, start=1))


class PostgresJobInputs:
    def __init__(self, pool: Pool, url: str) -> None:
        self._pool = pool
        self._url = url

    async def add(self, image: JobInput, *, now: datetime) -> int:
        """Store a new image, stamped `now`; its id."""
        values = (aware(now, "now"), image.content_type, image.width, image.height, image.data)
        with unavailable_on_error(self._url):
            image_id = await self._pool.fetchval(_numbered(_SQLITE_ADD), *values)
        return int(image_id)

    async def get(self, job_id: int) -> JobInput | None:
        with unavailable_on_error(self._url):
            row = await self._pool.fetchrow(_numbered(_SQLITE_READ), job_id)
        return None if row is None else JobInput(row[0], row[1], row[2], bytes(row[3]))


if TYPE_CHECKING:

    def _implements_protocol(inputs: PostgresJobInputs) -> JobInputs:
        return inputs  # mypy fails here if the class drifts from the protocol
