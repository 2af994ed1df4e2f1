"""Numbered migrations for PostgreSQL, tracked in a `schema_version` table.

The same shape as `storage.migrate` for SQLite (files `NNNN_name.sql`, applied
in order, never edited once shipped) with PostgreSQL's dialect in
`storage/migrations_pg/`. Every migration that SQLite has exists here under
the same name and in the same order; PostgreSQL may have more (the process
registry and the shared budget, which one SQLite process does not need), so
the two version numbers may differ: each database knows its own.

Several processes start at once against one database, so the whole run holds
a session advisory lock: the first migrates, the others wait and then find
the work done. Each migration is one transaction (PostgreSQL's DDL is
transactional), so a failed one leaves both the schema and `schema_version`
as they were.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING

from storage.migrate import Migration, SchemaTooNewError, load_migrations

if TYPE_CHECKING:
    from storage.postgres.connect import Connection

log = logging.getLogger(__name__)

# pg_advisory_lock's key for "migrating this database": any constant, the same in every release.
MIGRATION_LOCK = 0x696D6167696E65  # "imagine"

_CREATE_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version    INTEGER     PRIMARY KEY,
    name       TEXT        NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""
_READ_VERSION = "SELECT coalesce(max(version), 0) FROM schema_version"


@functools.cache
def bundled_migrations() -> tuple[Migration, ...]:
    """The PostgreSQL migrations shipped in the `storage` package (package data, so they work from a wheel)."""
    return load_migrations(resources.files("storage") / "migrations_pg")


def latest_version() -> int:
    return len(bundled_migrations())


async def schema_version(conn: Connection) -> int:
    """The database's version: 0 for a database no release has migrated yet."""
    if await conn.fetchval("SELECT to_regclass('schema_version') IS NULL"):
        return 0
    return int(await conn.fetchval(_READ_VERSION))


async def migrate(conn: Connection, migrations: Sequence[Migration], *, lock_timeout: float = 120) -> int:
    """Apply the migrations newer than the database's version; return the resulting version.

    Waits at most `lock_timeout` seconds for another process's migration
    (TimeoutError after that). Refuses a database a newer release migrated
    (SchemaTooNewError): this code would write rows missing what it expects.
    """
    known = migrations[-1].version if migrations else 0
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK, timeout=lock_timeout)
    except TimeoutError:
        raise TimeoutError(f"another process has been migrating the database for over {lock_timeout:g} s") from None
    try:
        await conn.execute(_CREATE_VERSION_TABLE)
        version = int(await conn.fetchval(_READ_VERSION))
        if version > known:
            raise SchemaTooNewError(version, known)
        for migration in migrations:
            if migration.version <= version:
                continue
            async with conn.transaction():
                # No arguments: asyncpg sends the file as one simple query, so it may hold many statements.
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_version (version, name) VALUES ($1, $2)", migration.version, migration.name
                )
            version = migration.version
            log.info("database migrated to schema version %d (%s)", version, migration.name)
    finally:
        if not conn.is_closed():  # a lost connection has released the lock with its session
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    return version
