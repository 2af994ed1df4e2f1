"""Both job stores under one fixture: every behaviour test runs against SQLite and against a real PostgreSQL.

The PostgreSQL server is started once per session (tests/pgserver.py) and each
test gets a fresh database copied from a template that is already migrated.
Without PostgreSQL installed the PostgreSQL half is skipped on a developer's
machine, and fails with one line under CI (CI=true), which must have it
(.ci/run installs it): a green CI that never touched PostgreSQL would prove
nothing.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from storage.open import AnyJobStore
from storage.postgres.jobs import PostgresJobStore
from storage.sqlite import SQLiteJobStore
from tests.pgserver import PostgresNotInstalledError, PostgresServer, find_bindir

MIGRATED_TEMPLATE = "imagine_migrated"

AnyStore = AnyJobStore


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real server for the whole session, stopped (and its folder removed) at the end."""
    try:
        bindir = find_bindir()
    except PostgresNotInstalledError as missing:
        if in_ci():
            pytest.fail(f"{missing}; CI must run the PostgreSQL tests (.ci/run installs it)", pytrace=False)
        pytest.skip(f"{missing}; install it (apt-get install postgresql) to run these tests")
    server = PostgresServer.start(bindir)
    try:
        yield server
    finally:
        server.stop()


async def _migrate(url: str) -> None:
    store = await PostgresJobStore.open(url)
    await store.close()


@pytest.fixture
async def postgres_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """A fresh database at the current schema version, dropped after the test."""
    await postgres_server.make_template(MIGRATED_TEMPLATE, _migrate)
    async with postgres_server.database(MIGRATED_TEMPLATE) as url:
        yield url


@pytest.fixture
async def empty_postgres_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """A fresh database no migration has touched, dropped after the test."""
    async with postgres_server.database() as url:
        yield url


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
    await server.make_template(MIGRATED_TEMPLATE, _migrate)
    async with server.database(MIGRATED_TEMPLATE) as url:
        postgres = await PostgresJobStore.open(url)
        try:
            yield postgres
        finally:
            await postgres.close()
