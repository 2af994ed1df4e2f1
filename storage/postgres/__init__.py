"""The PostgreSQL backend: several bot processes sharing one database (`DATABASE_URL`).

`PostgresJobStore` implements the same `JobStore`/`GuildStore` protocols as the
SQLite store; `ProcessRegistry` is what processes need from each other (who
runs which shards). See docs/postgres.md.
"""

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
    "create_pool",
    "redact_url",
]
