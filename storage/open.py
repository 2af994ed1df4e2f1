"""Open the job store the settings ask for: PostgreSQL when a database URL is given, the SQLite file otherwise.

One SQLite file serves one process; a PostgreSQL URL is how several processes
(each running its own shards) share jobs. Everything above the `JobStore`
protocol is the same for both, so this is the only place that chooses.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeAlias

from aiolimiter import AsyncLimiter

from storage.postgres.budget import SharedRequestBudget
from storage.postgres.jobs import PostgresJobStore
from storage.sqlite import SQLiteJobStore

# Both stores, with the methods beyond the protocol (count_by_state, leases, ...) the bot also calls.
AnyJobStore: TypeAlias = SQLiteJobStore | PostgresJobStore


async def open_store(
    *, database_url: str | None, database_path: Path, busy_timeout_ms: int = 2000, pool_size: int = 10
) -> AnyJobStore:
    """The PostgreSQL store at `database_url` if one is given (migrated, pooled), else the SQLite file.

    The URL may hold a password: it is passed on as it is and only ever
    logged in its redacted form. `busy_timeout_ms` is SQLite's wait for a
    locked file; `pool_size` is PostgreSQL's most connections per process.
    """
    if database_url:
        return await PostgresJobStore.open(database_url, max_size=pool_size)
    return await SQLiteJobStore.open(database_path, busy_timeout_ms=busy_timeout_ms)


async def open_request_budget(store: AnyJobStore, rate: float) -> AsyncLimiter | SharedRequestBudget:
    """The RunComfy request budget of everything using `store`: one token bucket in PostgreSQL, shared by every
    process on it (the bot's and the CLI's), else this process's own limiter."""
    if isinstance(store, PostgresJobStore):
        return await SharedRequestBudget.open(store.pool, rate=rate)
    return AsyncLimiter(rate, 1.0)
