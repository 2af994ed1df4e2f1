"""PostgreSQL's numbered migrations: fresh, racing, failing and newer-than-code databases, and parity with SQLite."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from storage.columns import COLUMNS
from storage.migrate import Migration, SchemaTooNewError
from storage.migrate import bundled_migrations as sqlite_migrations
from storage.models import GUILD_SETTING_COLUMNS, JobInput, JobState, NewJob, StoredInput
from storage.postgres.jobs import PostgresJobStore
from storage.postgres.migrate import MIGRATION_LOCK, bundled_migrations, latest_version, migrate, schema_version
from storage.sqlite import SQLiteJobStore, StoreUnavailableError

pytestmark = pytest.mark.postgres

# Migrations only PostgreSQL has: what several processes need and one SQLite process does not.
POSTGRES_ONLY = {"processes_and_budget"}
# Where each SQLite migration is in PostgreSQL, by version: the PostgreSQL-only ones shift those after them.
SQLITE_TO_POSTGRES = {1: 1, 2: 2, 3: 3, 4: 5, 5: 6, 6: 7, 7: 8, 8: 9, 9: 10, 10: 11}


async def columns(url: str, table: str) -> list[str]:
    raw = await asyncpg.connect(url)
    try:
        rows = await raw.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position", table
        )
    finally:
        await raw.close()
    return [row[0] for row in rows]


def test_every_sqlite_migration_has_its_postgres_translation_in_the_same_order() -> None:
    sqlite_names = [migration.name for migration in sqlite_migrations()]
    postgres_names = [migration.name for migration in bundled_migrations()]
    assert [name for name in postgres_names if name not in POSTGRES_ONLY] == sqlite_names
    postgres_versions = {migration.name: migration.version for migration in bundled_migrations()}
    assert {m.version: postgres_versions[m.name] for m in sqlite_migrations()} == SQLITE_TO_POSTGRES


async def test_a_fresh_database_is_migrated_to_the_latest_version(empty_postgres_url: str) -> None:
    async with await PostgresJobStore.open(empty_postgres_url) as store:
        assert store.schema_version == latest_version() == len(bundled_migrations())
    raw = await asyncpg.connect(empty_postgres_url)
    try:
        applied = [(row["version"], row["name"]) for row in await raw.fetch("SELECT * FROM schema_version")]
    finally:
        await raw.close()
    assert applied == [(m.version, m.name) for m in bundled_migrations()]


async def test_both_backends_have_the_same_columns(postgres_url: str, tmp_path: Path) -> None:
    # The stores build their SQL from storage.columns; a column missing from either schema breaks it.
    await (await SQLiteJobStore.open(tmp_path / "jobs.sqlite3")).close()
    with sqlite3.connect(tmp_path / "jobs.sqlite3") as raw:
        sqlite_jobs = [row[1] for row in raw.execute("PRAGMA table_info(jobs)")]
        sqlite_guilds = [row[1] for row in raw.execute("PRAGMA table_info(guild_settings)")]
    raw.close()
    assert sorted(await columns(postgres_url, "jobs")) == sorted(sqlite_jobs) == sorted(COLUMNS)
    assert await columns(postgres_url, "guild_settings") == sqlite_guilds
    assert set(GUILD_SETTING_COLUMNS) < set(sqlite_guilds)


async def test_processes_starting_together_migrate_once(empty_postgres_url: str) -> None:
    # Without the advisory lock two of them would both CREATE TABLE jobs and one would fail.
    stores = await asyncio.gather(*(PostgresJobStore.open(empty_postgres_url) for _ in range(5)))
    try:
        assert {store.schema_version for store in stores} == {latest_version()}
    finally:
        for store in stores:
            await store.close()


async def test_a_database_from_a_newer_release_is_refused(postgres_url: str) -> None:
    raw = await asyncpg.connect(postgres_url)
    try:
        await raw.execute("INSERT INTO schema_version (version, name) VALUES ($1, 'from_the_future')", 99)
    finally:
        await raw.close()
    with pytest.raises(SchemaTooNewError, match="99 is newer than this release knows"):
        await PostgresJobStore.open(postgres_url)
    with pytest.raises(SchemaTooNewError):
        await PostgresJobStore.open(postgres_url, migrate_schema=False)


async def test_a_failing_migration_leaves_schema_and_version_as_they_were(empty_postgres_url: str) -> None:
    good = Migration(1, "first", "CREATE TABLE first (id integer);")
    bad = Migration(2, "second", "CREATE TABLE second (id integer); INSERT INTO second VALUES ('not a number');")
    raw = await asyncpg.connect(empty_postgres_url)
    try:
        with pytest.raises(asyncpg.InvalidTextRepresentationError):
            await migrate(raw, [good, bad])
        assert await schema_version(raw) == 1
        assert await raw.fetchval("SELECT to_regclass('second')") is None
        assert not await raw.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        ), "lock released"
    finally:
        await raw.close()


async def test_opening_without_migrating_wants_the_current_version(empty_postgres_url: str) -> None:
    with pytest.raises(StoreUnavailableError, match="schema version 0 needs migrating"):
        await PostgresJobStore.open(empty_postgres_url, migrate_schema=False)
    await (await PostgresJobStore.open(empty_postgres_url)).close()
    async with await PostgresJobStore.open(empty_postgres_url, migrate_schema=False) as store:
        assert store.schema_version == latest_version()


async def test_a_migration_held_up_elsewhere_gives_up_with_a_sentence(empty_postgres_url: str) -> None:
    holder = await asyncpg.connect(empty_postgres_url)
    waiter = await asyncpg.connect(empty_postgres_url)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        with pytest.raises(TimeoutError, match="another process has been migrating the database"):
            await migrate(waiter, bundled_migrations(), lock_timeout=0.2)
        assert await schema_version(waiter) == 0
    finally:
        await holder.close()
        await waiter.close()


async def test_rows_from_before_the_delivery_stage_move_to_it(empty_postgres_url: str) -> None:
    """0005 turns what the previous release wrote into what it means now, as SQLite's 0004 does."""
    before = next(m.version for m in bundled_migrations() if m.name == "delivery_stage") - 1
    old, later = datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, 0, 5, tzinfo=UTC)
    raw = await asyncpg.connect(empty_postgres_url)
    try:
        assert await migrate(raw, bundled_migrations()[:before]) == before
        rows = [
            ("completed", None, None, None),  # made before the restart, never delivered
            ("failed", later, "undeliverable", 77),  # made, nowhere to go
            ("failed", later, None, 78),  # failed, never shown
            ("failed", later, "notified", 79),  # failed and shown
        ]
        await raw.executemany(
            "INSERT INTO jobs (state, model, prompt, aspect_ratio, seed, created_at, updated_at, finished_at,"
            " delivery, message_id) VALUES ($1, 'm', 'p', '1:1', 1, $2, $2, $3, $4, $5)",
            [(state, old, finished, delivery, message_id) for state, finished, delivery, message_id in rows],
        )
    finally:
        await raw.close()
    async with await PostgresJobStore.open(empty_postgres_url) as store:
        jobs = [await store.get(job_id) for job_id in (1, 2, 3, 4)]
        assert [(job.state, job.deliver_at) for job in jobs if job is not None] == [
            (JobState.COMPLETED, old),
            (JobState.UNDELIVERABLE, None),
            (JobState.FAILED, later),
            (JobState.FAILED, None),
        ]
        assert [job.id for job in await store.owing_delivery()] == [1, 3]
        assert [job.id for job in await store.unfinished()] == [1]


async def test_input_images_move_to_their_own_table_under_the_same_ids(empty_postgres_url: str) -> None:
    """0011, as SQLite's 0010: each job's stored input becomes an image its job names; new ids come after."""
    before = next(m.version for m in bundled_migrations() if m.name == "shared_inputs") - 1
    now = datetime(2025, 1, 1, tzinfo=UTC)
    raw = await asyncpg.connect(empty_postgres_url)
    try:
        assert await migrate(raw, bundled_migrations()[:before]) == before
        await raw.executemany(
            "INSERT INTO jobs (model, prompt, aspect_ratio, seed, state, created_at, updated_at, input_url)"
            " VALUES ('m', $1, '1:1', 1, 'delivered', $2, $2, $3)",
            [("an edit", now, "https://x/in.png"), ("one whose image was never stored", now, "https://x/in.png")],
        )
        await raw.execute("INSERT INTO job_inputs VALUES (1, 'image/png', 2, 3, '\\x89504e47'::bytea)")
    finally:
        await raw.close()
    async with await PostgresJobStore.open(empty_postgres_url) as store:
        jobs = [await store.get(job_id) for job_id in (1, 2)]
        assert [job.input_image_id for job in jobs if job is not None] == [1, None]
        assert await store.inputs.get(1) == JobInput("image/png", 2, 3, b"\x89PNG")
        image = StoredInput(await store.inputs.add(JobInput("image/jpeg", 1, 1, b"\xff\xd8"), now=now))
        new = await store.create(NewJob("m", "p", "1:1", 1, input=image), now=now)
        assert new.input_image_id == 2
        assert await store.inputs.get(new.id) == JobInput("image/jpeg", 1, 1, b"\xff\xd8")
