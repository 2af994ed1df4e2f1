"""The PostgreSQL backend: several bot processes sharing one database (`DATABASE_URL`).

`PostgresJobStore` implements the same `JobStore`/`GuildStore` protocols as the
SQLite store. See docs/postgres.md.
"""

from storage.postgres.connect import create_pool, redact_url
from storage.postgres.guilds import PostgresGuildStore
from storage.postgres.jobs import PostgresJobStore

__all__ = ["PostgresGuildStore", "PostgresJobStore", "create_pool", "redact_url"]
