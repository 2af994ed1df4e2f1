"""The PostgreSQL backend: several bot processes sharing one database (`DATABASE_URL`).

`PostgresJobStore` implements the same `JobStore`/`GuildStore` protocols as the
SQLite store; `ProcessRegistry` and `SharedRequestBudget` are what processes
need from each other (who runs which shards; one RunComfy request budget).
See docs/postgres.md.
"""

from storage.postgres.budget import SharedRequestBudget
from storage.postgres.connect import create_pool, redact_url
from storage.postgres.guilds import PostgresGuildStore
from storage.postgres.jobs import PostgresJobStore
from storage.postgres.registry import ProcessInfo, ProcessRegistry, ShardsTakenError

__all__ = [
    "PostgresGuildStore",
    "PostgresJobStore",
    "ProcessInfo",
    "ProcessRegistry",
    "ShardsTakenError",
    "SharedRequestBudget",
    "create_pool",
    "redact_url",
]
