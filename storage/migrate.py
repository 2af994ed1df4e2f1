"""Numbered SQL migrations, tracked with `PRAGMA user_version`.

The RoboDanny shape: `storage/migrations/NNNN_name.sql`, applied in order, one
transaction each, never edited once shipped (a change is a new file). SQLite
keeps the schema version in the database header, so a file carries its own
version wherever it is copied, and a failed migration leaves both the schema
and the number as they were: DDL and `user_version` are transactional.
"""

from __future__ import annotations

import functools
import logging
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

import aiosqlite

log = logging.getLogger(__name__)

_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)


class SchemaTooNewError(RuntimeError):
    """The database was migrated by a newer release than this one.

    Refused rather than used: older code would write rows missing what the newer
    schema expects, and could not undo a migration it has never seen.
    """

    def __init__(self, found: int, known: int) -> None:
        super().__init__(
            f"database schema version {found} is newer than this release knows ({known}); "
            "run the newer release or restore a backup"
        )
        self.found = found
        self.known = known


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(root: Traversable) -> tuple[Migration, ...]:
    """Read `NNNN_name.sql` files from `root`, checking they run 1, 2, 3... without gaps.

    A gap or duplicate means a file was lost or renamed in a merge; running the
    rest would give different schemas at the same version number, so it fails here.
    """
    found: list[Migration] = []
    for entry in root.iterdir():
        match = _FILE_NAME.match(entry.name)
        if entry.name.endswith(".sql") and match is None:
            raise ValueError(f"migration file {entry.name!r} is not named NNNN_name.sql")
        if match is not None:
            found.append(Migration(int(match["version"]), match["name"], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise ValueError(f"migrations must be numbered 1, 2, 3... without gaps or duplicates; found {versions}")
    return tuple(found)


@functools.cache
def bundled_migrations() -> tuple[Migration, ...]:
    """The migrations shipped in the `storage` package (package data, so they work from a wheel)."""
    return load_migrations(resources.files("storage") / "migrations")


def latest_version() -> int:
    return len(bundled_migrations())


def split_statements(script: str) -> list[str]:
    """Cut a migration script into single statements.

    `executescript` would be simpler but COMMITs any open transaction first,
    which would break one-transaction-per-migration. `sqlite3.complete_statement`
    knows about string literals, comments and trigger bodies, so a `;` inside
    any of them does not end a statement.
    """
    statements: list[str] = []
    start = 0
    for index, char in enumerate(script):
        if char == ";" and sqlite3.complete_statement(script[start : index + 1]):
            statement = script[start : index + 1].strip()
            if _COMMENTS.sub("", statement).strip(" \t\r\n;"):
                statements.append(statement)
            start = index + 1
    if _COMMENTS.sub("", script[start:]).strip():
        raise ValueError(f"migration ends with an unterminated statement: {script[start:].strip()[:80]!r}")
    return statements


async def user_version(db: aiosqlite.Connection) -> int:
    rows = list(await db.execute_fetchall("PRAGMA user_version"))
    return int(rows[0][0])


async def migrate(db: aiosqlite.Connection, migrations: Sequence[Migration]) -> int:
    """Apply the migrations newer than the database's `user_version`; return the resulting version.

    `db` must be in autocommit mode (`isolation_level=None`) so the transactions
    here are the only ones. Each migration runs in `BEGIN IMMEDIATE`, which takes
    the write lock before re-reading the version: a second process starting at
    the same moment waits, then sees the work done and skips it.

    Foreign keys are switched off while migrating (the pragma is a no-op inside a
    transaction) so a future migration may rebuild a table the way SQLite
    documents; `PRAGMA foreign_key_check` then runs before each COMMIT instead.
    The caller switches them back on.
    """
    if db.isolation_level is not None:
        raise ValueError("migrate() needs a connection opened with isolation_level=None")
    known = migrations[-1].version if migrations else 0
    version = await user_version(db)
    if version > known:
        raise SchemaTooNewError(version, known)
    await db.execute("PRAGMA foreign_keys = OFF")
    for migration in migrations:
        if migration.version <= version:
            continue
        await db.execute("BEGIN IMMEDIATE")
        try:
            version = await user_version(db)
            if version > known:
                raise SchemaTooNewError(version, known)
            if version >= migration.version:
                await db.execute("COMMIT")
                continue
            for statement in split_statements(migration.sql):
                await db.execute(statement)
            violations = list(await db.execute_fetchall("PRAGMA foreign_key_check"))
            if violations:
                raise RuntimeError(f"migration {migration.version} leaves {len(violations)} foreign key violations")
            # An int from the file name, not user input; PRAGMA takes no parameters.
            await db.execute(f"PRAGMA user_version = {migration.version:d}")
            await db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                await db.execute("ROLLBACK")
            raise
        version = migration.version
        log.info("database migrated to schema version %d (%s)", version, migration.name)
    return version
