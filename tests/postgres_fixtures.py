"""A real PostgreSQL for the tests that need one: started once per session, a fresh database per test.

The server comes from tests/pgserver.py (initdb + pg_ctl in a temporary
folder, on a free port). Each test gets a database copied from a template that
is already migrated. Without PostgreSQL installed these tests are skipped on a
developer's machine, and fail with one line under CI (CI=true), which must
have it (.ci/run installs it): a green CI that never touched PostgreSQL would
prove nothing.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

from storage.postgres.jobs import PostgresJobStore
from tests.pgserver import PostgresNotInstalledError, PostgresServer, find_bindir

MIGRATED_TEMPLATE = "imagine_migrated"


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


async def migrate_template(url: str) -> None:
    store = await PostgresJobStore.open(url)
    await store.close()


@pytest.fixture
async def postgres_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """A fresh database at the current schema version, dropped after the test."""
    await postgres_server.make_template(MIGRATED_TEMPLATE, migrate_template)
    async with postgres_server.database(MIGRATED_TEMPLATE) as url:
        yield url


@pytest.fixture
async def empty_postgres_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """A fresh database no migration has touched, dropped after the test."""
    async with postgres_server.database() as url:
        yield url
