"""Numbered migrations on fresh, older and newer database files."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite
import pytest

from storage.migrate import (
    Migration,
    SchemaTooNewError,
    bundled_migrations,
    latest_version,
    load_migrations,
    migrate,
    split_statements,
)
from storage.models import Job, JobInput, JobOrigin, JobState, NewJob, StoredInput
from storage.sqlite import SQLiteJobStore, StoreUnavailableError

ANY = tuple(JobState)  # the tests move jobs freely; the manager always names the state it expects

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

# What a database looked like at schema version 1, written out by hand so this
# test keeps describing real old files even if someone edits 0001_jobs.sql.
VERSION_1_SCHEMA = """
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT,
    parent_id INTEGER REFERENCES jobs (id) ON DELETE SET NULL,
    model TEXT NOT NULL, prompt TEXT NOT NULL, aspect_ratio TEXT NOT NULL, seed INTEGER NOT NULL,
    state TEXT NOT NULL,
    queue_position INTEGER,
    created_at TEXT NOT NULL, queued_at TEXT, started_at TEXT, completed_at TEXT, finished_at TEXT,
    updated_at TEXT NOT NULL,
    next_poll_at TEXT,
    poll_count INTEGER NOT NULL DEFAULT 0,
    result_url TEXT, error TEXT, cost_usd REAL,
    cost_estimated INTEGER NOT NULL DEFAULT 0 CHECK (cost_estimated IN (0, 1)),
    guild_id INTEGER, channel_id INTEGER, user_id INTEGER, message_id INTEGER, application_id INTEGER,
    interaction_token TEXT, token_expires_at TEXT, filesize_limit INTEGER
);
CREATE INDEX jobs_unfinished ON jobs (created_at) WHERE state NOT IN ('cancelled', 'delivered', 'failed');
CREATE INDEX jobs_request_id ON jobs (request_id);
CREATE INDEX jobs_user ON jobs (user_id, guild_id, created_at);
CREATE INDEX jobs_parent_id ON jobs (parent_id);
CREATE INDEX jobs_message_id ON jobs (message_id) WHERE message_id IS NOT NULL;
CREATE INDEX jobs_model_completed ON jobs (model, completed_at) WHERE completed_at IS NOT NULL;
INSERT INTO jobs (model, prompt, aspect_ratio, seed, state, created_at, updated_at, completed_at, result_url,
                  guild_id, user_id, interaction_token)
VALUES ('imagineart-1.5', 'an old fox', '1:1', 3, 'completed', '2025-01-01T00:00:00.000000+00:00',
        '2025-01-01T00:01:00.000000+00:00', '2025-01-01T00:01:00.000000+00:00', 'https://example.invalid/a.png',
        1234567890123456789, 987654321098765432, 'old-token');
INSERT INTO jobs (model, prompt, aspect_ratio, seed, state, parent_id, created_at, updated_at)
VALUES ('imagineart-1.5', 'its reroll', '1:1', 4, 'submitting', 1, '2025-01-01T00:02:00.000000+00:00',
        '2025-01-01T00:02:00.000000+00:00');
PRAGMA user_version = 1;
"""


def make_file(path: Path, script: str) -> None:
    with sqlite3.connect(path) as raw:
        raw.executescript(script)
    raw.close()


def read_pragma(path: Path, name: str) -> object:
    with sqlite3.connect(path) as raw:
        value = raw.execute(f"PRAGMA {name}").fetchone()[0]
    raw.close()
    return value


def table_names(path: Path) -> set[str]:
    with sqlite3.connect(path) as raw:
        names = {row[0] for row in raw.execute("SELECT name FROM sqlite_schema")}
    raw.close()
    return names


def test_bundled_migrations_are_numbered_from_one_without_gaps() -> None:
    migrations = bundled_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert migrations[0].name == "jobs"
    assert latest_version() == len(migrations) >= 2


def test_the_loader_refuses_gaps_duplicates_and_odd_names(tmp_path: Path) -> None:
    (tmp_path / "0001_one.sql").write_text("SELECT 1;")
    (tmp_path / "0003_three.sql").write_text("SELECT 1;")
    with pytest.raises(ValueError, match="without gaps"):
        load_migrations(tmp_path)
    (tmp_path / "0002_two.sql").write_text("SELECT 1;")
    assert [m.version for m in load_migrations(tmp_path)] == [1, 2, 3]
    (tmp_path / "0002_again.sql").write_text("SELECT 1;")
    with pytest.raises(ValueError, match="without gaps"):
        load_migrations(tmp_path)
    (tmp_path / "0002_again.sql").unlink()
    (tmp_path / "4_four.sql").write_text("SELECT 1;")
    with pytest.raises(ValueError, match="NNNN_name"):
        load_migrations(tmp_path)


def test_split_statements_respects_strings_comments_and_triggers() -> None:
    script = """
    -- a comment; with a semicolon
    CREATE TABLE t (a TEXT DEFAULT 'x;y');  /* block; comment */
    CREATE TRIGGER t_ai AFTER INSERT ON t BEGIN
        UPDATE t SET a = 'z;' WHERE rowid = new.rowid;
    END;
    INSERT INTO t VALUES ('1'); INSERT INTO t VALUES ('2');
    -- trailing comment
    """
    statements = split_statements(script)
    assert len(statements) == 4
    assert statements[0].endswith("DEFAULT 'x;y');")
    assert statements[1].startswith("/* block; comment */")
    assert statements[1].endswith("END;")
    with sqlite3.connect(":memory:") as raw:
        for statement in statements:
            raw.execute(statement)
        assert raw.execute("SELECT a FROM t").fetchall() == [("z;",), ("z;",)]
    raw.close()
    with pytest.raises(ValueError, match="unterminated"):
        split_statements("CREATE TABLE t (a); SELECT 1")


async def test_a_fresh_file_gets_every_migration(tmp_path: Path) -> None:
    path = tmp_path / "fresh.sqlite3"
    async with await SQLiteJobStore.open(path) as store:
        assert store.schema_version == latest_version()
    assert read_pragma(path, "user_version") == latest_version()
    assert read_pragma(path, "journal_mode") == "wal"
    with sqlite3.connect(path) as raw:
        columns = {row[1] for row in raw.execute("PRAGMA table_info(jobs)")}
    raw.close()
    expected = {f.name for f in dataclasses.fields(Job) if f.name != "origin"}
    assert columns == expected | {f.name for f in dataclasses.fields(JobOrigin)}
    assert {"jobs_unfinished", "jobs_request_id", "jobs_user", "jobs_parent_id", "jobs_message_id"} <= table_names(path)


async def test_reopening_does_not_migrate_again(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    async with await SQLiteJobStore.open(path) as store:
        job = await store.create(NewJob("m", "p", "1:1", 1), now=NOW)
        await store.transition(job.id, JobState.IN_QUEUE, expect=ANY, now=NOW)
    async with await SQLiteJobStore.open(path) as store:
        assert store.schema_version == latest_version()
        assert (await store.count_by_state())[JobState.IN_QUEUE] == 1


async def test_a_version_1_file_upgrades_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    make_file(path, VERSION_1_SCHEMA)
    assert read_pragma(path, "user_version") == 1

    async with await SQLiteJobStore.open(path) as store:
        assert store.schema_version == latest_version()
        old = await store.get(1)
        assert old is not None
        assert (old.prompt, old.state, old.result_url) == (
            "an old fox",
            JobState.COMPLETED,
            "https://example.invalid/a.png",
        )
        assert old.completed_at == datetime(2025, 1, 1, 0, 1, tzinfo=UTC)
        assert (old.origin.guild_id, old.origin.user_id) == (1234567890123456789, 987654321098765432)
        assert old.origin.interaction_token == "old-token"
        assert (old.delivery, old.lease_owner, old.lease_until) == (None, None, None)
        assert [job.prompt for job in await store.children(1)] == ["its reroll"]

        delivered = await store.transition(
            1, JobState.DELIVERED, expect=ANY, now=NOW, delivery="file", interaction_token=None
        )
        assert delivered is not None
        assert delivered.delivery == "file"
        assert [job.id for job in await store.unfinished()] == [2]
    assert read_pragma(path, "user_version") == latest_version()


async def test_a_read_only_open_of_an_old_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    make_file(path, VERSION_1_SCHEMA)
    with pytest.raises(StoreUnavailableError, match="needs migrating"):
        await SQLiteJobStore.open(path, read_only=True)
    assert read_pragma(path, "user_version") == 1


async def test_a_newer_schema_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite3"
    make_file(path, "CREATE TABLE from_the_future (x); PRAGMA user_version = 99;")
    with pytest.raises(SchemaTooNewError, match="99") as caught:
        await SQLiteJobStore.open(path)
    assert (caught.value.found, caught.value.known) == (99, latest_version())
    with pytest.raises(SchemaTooNewError):
        await SQLiteJobStore.open(path, read_only=True)
    assert read_pragma(path, "user_version") == 99
    assert "jobs" not in table_names(path)


async def test_a_failed_migration_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "half.sqlite3"
    good = Migration(1, "one", "CREATE TABLE one (a);")
    broken = Migration(
        2, "two", "CREATE TABLE two (a);\nALTER TABLE one ADD COLUMN b;\nINSERT INTO nowhere VALUES (1);"
    )
    fixed = dataclasses.replace(broken, sql="CREATE TABLE two (a);\nALTER TABLE one ADD COLUMN b;")
    async with aiosqlite.connect(path, isolation_level=None) as db:
        with pytest.raises(sqlite3.OperationalError, match="nowhere"):
            await migrate(db, [good, broken])
        assert not db.in_transaction
        assert read_pragma(path, "user_version") == 1
        assert "two" not in table_names(path)
        assert await migrate(db, [good, fixed]) == 2
    assert read_pragma(path, "user_version") == 2
    assert "two" in table_names(path)


async def test_migrate_needs_an_autocommit_connection(tmp_path: Path) -> None:
    async with aiosqlite.connect(tmp_path / "x.sqlite3") as db:
        with pytest.raises(ValueError, match="isolation_level=None"):
            await migrate(db, bundled_migrations())


async def test_two_stores_opening_one_fresh_file_at_once(tmp_path: Path) -> None:
    path = tmp_path / "race.sqlite3"
    stores = await asyncio.gather(SQLiteJobStore.open(path), SQLiteJobStore.open(path))
    try:
        assert [store.schema_version for store in stores] == [latest_version()] * 2
    finally:
        for store in stores:
            await store.close()


async def test_version_3_rows_move_to_the_delivery_stage(tmp_path: Path) -> None:
    """0004 turns what the previous release wrote into what it means now, without losing a notice or an image."""
    path = tmp_path / "v3.sqlite3"
    db = await aiosqlite.connect(path, isolation_level=None)
    try:
        assert await migrate(db, bundled_migrations()[:3]) == 3
        columns = "state, model, prompt, aspect_ratio, seed, created_at, updated_at, finished_at, delivery, message_id"
        rows = [
            ("completed", None, None, None),  # made before the restart, never delivered
            ("failed", "2025-01-01T00:05:00.000000+00:00", "undeliverable", 77),  # made, nowhere to go
            ("failed", "2025-01-01T00:05:00.000000+00:00", None, 78),  # failed, never shown
            ("failed", "2025-01-01T00:05:00.000000+00:00", "notified", 79),  # failed and shown
        ]
        for state, finished, delivery, message_id in rows:
            await db.execute(
                f"INSERT INTO jobs ({columns}) VALUES (?, 'm', 'p', '1:1', 1, ?, ?, ?, ?, ?)",  # noqa: S608
                (state, "2025-01-01T00:00:00.000000+00:00", "2025-01-01T00:01:00.000000+00:00", finished, delivery,
                 message_id),
            )  # fmt: skip
    finally:
        await db.close()
    async with await SQLiteJobStore.open(path) as store:
        jobs = [await store.get(job_id) for job_id in (1, 2, 3, 4)]
        assert [(job.state, job.deliver_at is not None) for job in jobs if job is not None] == [
            (JobState.COMPLETED, True),
            (JobState.UNDELIVERABLE, False),
            (JobState.FAILED, True),
            (JobState.FAILED, False),
        ]
        assert [job.id for job in await store.owing_delivery()] == [1, 3]
        assert [job.id for job in await store.unfinished()] == [1]


async def test_input_images_move_to_their_own_table_under_the_same_ids(tmp_path: Path) -> None:
    """0010: each job's stored input becomes an image its job names; a new image is never given an old id."""
    path = tmp_path / "v9.sqlite3"
    before = next(m.version for m in bundled_migrations() if m.name == "shared_inputs") - 1
    db = await aiosqlite.connect(path, isolation_level=None)
    try:
        assert await migrate(db, bundled_migrations()[:before]) == before
        for prompt in ("an edit", "an edit whose image was never stored", "words only"):
            await db.execute(
                "INSERT INTO jobs (model, prompt, aspect_ratio, seed, state, created_at, updated_at, input_url)"
                " VALUES ('m', ?, '1:1', 1, 'delivered', ?, ?, ?)",
                (prompt, NOW.isoformat(), NOW.isoformat(), None if prompt == "words only" else "https://x/in.png"),
            )
        await db.execute("INSERT INTO job_inputs VALUES (1, 'image/png', 2, 3, x'89504e47')")
    finally:
        await db.close()
    async with await SQLiteJobStore.open(path) as store:
        jobs = [await store.get(job_id) for job_id in (1, 2, 3)]
        assert [job.input_image_id for job in jobs if job is not None] == [1, None, None]
        assert await store.inputs.get(1) == JobInput("image/png", 2, 3, b"\x89PNG")
        assert await store.inputs.get(2) is None
        image = StoredInput(await store.inputs.add(JobInput("image/jpeg", 1, 1, b"\xff\xd8"), now=NOW))
        new = await store.create(NewJob("m", "p", "1:1", 1, input=image), now=NOW)
        assert new.input_image_id not in (None, 1)
        assert await store.inputs.get(1) == JobInput("image/png", 2, 3, b"\x89PNG")
