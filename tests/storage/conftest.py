"""Both job stores under one fixture: every behaviour test runs against SQLite and against a real PostgreSQL.

The PostgreSQL server and its fixtures are tests/postgres_fixtures.py's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.open import AnyJobStore
from storage.postgres.jobs import PostgresJobStore
from storage.sqlite import SQLiteJobStore
from tests.pgserver import PostgresServer
from tests.postgres_fixtures import MIGRATED_TEMPLATE, migrate_template

AnyStore = AnyJobStore


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AnyStore]:
    """The job store under test: a SQLite file in tmp_path, or a PostgreSQL database of its own."""
    if request.param == "sqlite":
        sqlite = await SQLiteJobStore.open(tmp_path / "data" / "jobs.sqlite3")  # "data" does not exist yet
        try:
            yield sqlite
        finally:
            await sqlite.close()
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    await server.make_template(MIGRATED_TEMPLATE, migrate_template)
    async with server.database(MIGRATED_TEMPLATE) as url:
        postgres = await PostgresJobStore.open(url)
        try:
            yield postgres
        finally:
            await postgres.close()
