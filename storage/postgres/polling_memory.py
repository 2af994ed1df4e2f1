"""`PostgresPollingMemory`: the queue speed the polling policy learned, in the jobs' database.

`storage/polling_memory.py` has SQLite's, and why it exists. One row per
model; every process reads it at start and the newest write wins.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from storage.polling_memory import QueueSpeed, check_speed
from storage.postgres.connect import aware, unavailable_on_error

if TYPE_CHECKING:
    from storage.polling_memory import PollingMemory
    from storage.postgres.connect import Pool

_READ_SQL = "SELECT seconds_per_position, updated_at FROM polling_memory WHERE model = $1"
_SAVE_SQL = (
    "INSERT INTO polling_memory (model, seconds_per_position, updated_at) VALUES ($1, $2, $3)"
    " ON CONFLICT (model) DO UPDATE SET"
    " seconds_per_position = excluded.seconds_per_position, updated_at = excluded.updated_at"
)


class PostgresPollingMemory:
    def __init__(self, pool: Pool, url: str) -> None:
        self._pool = pool
        self._url = url

    async def queue_speed(self, model: str) -> QueueSpeed | None:
        with unavailable_on_error(self._url):
            row = await self._pool.fetchrow(_READ_SQL, model)
        return None if row is None else QueueSpeed(float(row[0]), row[1])

    async def save_queue_speed(self, model: str, seconds_per_position: float, *, now: datetime) -> None:
        with unavailable_on_error(self._url):
            await self._pool.execute(_SAVE_SQL, model, check_speed(seconds_per_position), aware(now, "now"))


if TYPE_CHECKING:

    def _implements_protocol(memory: PostgresPollingMemory) -> PollingMemory:
        return memory  # mypy fails here if the class drifts from the protocol
