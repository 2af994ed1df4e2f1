"""`SQLiteJobStore`: the job table in one SQLite file, for one bot process.

The job manager's promise is "the state is on disk before the next side
effect", so every write here is a single statement on an autocommit
connection: it is committed (and, with `synchronous=FULL`, fsynced to the WAL)
before the coroutine returns. Single statements also mean coroutines sharing
the one connection can never end up inside each other's transaction. (An
edit's image is stored, then named by its job: stopping between the two leaves
an image no job names, which the daily sweep removes.)

Datetimes are stored as UTC ISO-8601 text with microseconds (see
`migrations/0001_jobs.sql`) and come back timezone-aware in UTC; naive
datetimes are refused rather than guessed at.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import aiosqlite

from storage import retention
from storage.base import JobNotFoundError
from storage.columns import (
    ACTIVE_LIST,
    CREATE_STATES,
    ONCE_KEPT,
    ORIGIN_COLUMNS,
    PER_IMAGE,
    SELECT_LIST,
    UNFINISHED_WHERE,
    check_fields,
    check_once_window,
    expected_states,
    new_job_values,
)
from storage.guilds import SQLiteGuildStore
from storage.job_inputs import SQLiteJobInputs
from storage.migrate import SchemaTooNewError, bundled_migrations, latest_version, migrate, user_version
from storage.models import (
    STATE_TIMESTAMP,
    GuildLoad,
    Job,
    JobState,
    Lease,
    NewJob,
    Spend,
    Timing,
    Usage,
)
from storage.polling_memory import SQLitePollingMemory
from storage.spend import spend as read_spend
from storage.sqlite_common import StoreUnavailableError, from_text, to_text, unavailable_on_error
from storage.sqlite_rows import encode, row_to_job

if TYPE_CHECKING:
    from storage.base import JobStore

__all__ = ["SQLiteJobStore", "SchemaTooNewError", "StoreUnavailableError"]

log = logging.getLogger(__name__)


# Column lists, the settable-field check and the row mapping are storage/columns.py's, shared with PostgreSQL.
# The WHERE is the text of the partial indexes of live jobs (0004_delivery_stage.sql), so the planner uses them.
UNFINISHED_SQL = f"SELECT {SELECT_LIST} FROM jobs WHERE {UNFINISHED_WHERE} ORDER BY created_at, id"  # noqa: S608
_GUILD_LOAD_COUNTS = (
    f"SUM(user_id = :user AND state IN ({ACTIVE_LIST})), SUM(user_id = :user AND state = 'waiting'),"
    f" SUM(state IN ({ACTIVE_LIST})), SUM(state = 'waiting')"
)
# Insert the key, or take over one older than the window; RETURNING is empty when a live key is in the way.
_ONCE_SQL = (
    "INSERT INTO once_keys (key, at) VALUES (:key, :at)"
    " ON CONFLICT (key) DO UPDATE SET at = excluded.at WHERE once_keys.at <= :cutoff RETURNING key"
)
_GUILD_LOAD_SQL = f"SELECT {_GUILD_LOAD_COUNTS} FROM jobs WHERE guild_id = :guild AND {UNFINISHED_WHERE}"  # noqa: S608 - constants only


class SQLiteJobStore:
    """The `JobStore` over one aiosqlite connection (one per process, opened in `setup_hook`)."""

    def __init__(self, db: aiosqlite.Connection, path: Path, schema_version: int, *, read_only: bool) -> None:
        """Use `open()`: it sets the pragmas and migrates before anyone can write."""
        self._db = db
        self.path = path
        self.schema_version = schema_version
        self.read_only = read_only
        self.guilds = SQLiteGuildStore(db, path)
        self.polling = SQLitePollingMemory(db, path)
        self.inputs = SQLiteJobInputs(db, path)
        self._locks: dict[int, asyncio.Lock] = {}

    @property
    def leases(self) -> None:
        """One process owns a SQLite file's jobs (or processes split by shard each resume their own): no leases."""
        return None

    def exclusive(self, key: int) -> asyncio.Lock:
        """One task at a time per key; one process uses the file, so a lock in memory is the database's."""
        return self._locks.setdefault(key, asyncio.Lock())

    async def once(self, key: str, *, now: datetime, window: timedelta) -> bool:
        """True for the first call with `key` within `window`: one UPSERT that only rewrites a key older than the
        window, so of two callers racing only one sees its row come back. Keys a day old are cleared on the way."""
        check_once_window(window)
        stamp, cutoff = to_text(now, "now"), to_text(now - window, "now")
        with unavailable_on_error(self.path):
            await self._db.execute("DELETE FROM once_keys WHERE at <= ?", (to_text(now - ONCE_KEPT, "now"),))
            rows = list(await self._db.execute_fetchall(_ONCE_SQL, {"key": key, "at": stamp, "cutoff": cutoff}))
        return bool(rows)

    @classmethod
    async def open(cls, path: Path, *, read_only: bool = False, busy_timeout_ms: int = 5000) -> SQLiteJobStore:
        """Open (creating if needed) and migrate the database at `path`.

        WAL lets the doctor command read while the bot writes; `synchronous=FULL`
        fsyncs the WAL at every commit, so a committed transition survives a power
        cut too (NORMAL only survives a process crash). `read_only` opens with
        `mode=ro`, which refuses writes even as root, and never migrates: an
        out-of-date read-only file is refused instead.
        """
        path = Path(path)
        with unavailable_on_error(path):
            if not read_only:
                path.parent.mkdir(parents=True, exist_ok=True)
            uri = f"{path.resolve().as_uri()}?mode={'ro' if read_only else 'rwc'}"
            connection = aiosqlite.connect(uri, uri=True, isolation_level=None)
            try:
                db = await connection
            except BaseException:
                # aiosqlite 0.22 queues its worker's shutdown after a failed connect without awaiting it;
                # wait for the thread, or it later reports to an event loop that is gone (omnilib/aiosqlite#389).
                worker = getattr(connection, "_thread", None)
                if isinstance(worker, threading.Thread) and worker.is_alive():
                    await asyncio.to_thread(worker.join, 5)
                raise
        try:
            with unavailable_on_error(path):
                db.row_factory = sqlite3.Row
                await db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms):d}")
                await db.execute("PRAGMA synchronous = FULL")
                if read_only:
                    version = await _check_read_only_version(db, path)
                else:
                    rows = await _enter_wal(db, busy_timeout_ms / 1000)
                    if rows[0][0] != "wal":
                        log.warning("SQLite refused WAL mode for %s (kept %s)", path, rows[0][0])
                    version = await migrate(db, bundled_migrations())
                await db.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            await db.close()
            raise
        return cls(db, path, version, read_only=read_only)

    async def close(self) -> None:
        await self._db.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # Writes: one statement each, committed when the method returns.

    async def create(
        self,
        new: NewJob,
        *,
        now: datetime,
        state: JobState = JobState.SUBMITTING,
        post_nonce: str | None = None,
        lease: Lease | None = None,
    ) -> Job:
        """Insert a job in state `submitting` (or `waiting`), held by `lease` when given; written before any
        request leaves the bot.

        A reroll or remix names its source's stored image (`StoredInput`), and the foreign key makes sure it is
        still there. A member's new image is read after its job is written, then stored and named
        (`give_input`).

        Raises JobNotFoundError if `new.parent_id` names no job.
        """
        if state not in CREATE_STATES:
            raise ValueError(f"a job starts in submitting or waiting, not {state}")
        stamp = to_text(now, "now")
        values: dict[str, Any] = {
            "model": new.model,
            "prompt": new.prompt,
            "aspect_ratio": new.aspect_ratio,
            "seed": new.seed,
            "state": JobState(state).value,
            "parent_id": new.parent_id,
            "exempt": int(new.exempt),
            "post_nonce": post_nonce,
            "created_at": stamp,
            "updated_at": stamp,
            "lease_owner": lease.owner if lease else None,
            "lease_until": to_text(lease.until, "lease.until") if lease else None,
        }
        for column in ORIGIN_COLUMNS:
            values[column] = encode(column, getattr(new.origin, column))
        values.update((column, encode(column, value)) for column, value in new_job_values(new).items())
        names = ", ".join(values)
        placeholders = ", ".join(f":{name}" for name in values)
        sql = f"INSERT INTO jobs ({names}) VALUES ({placeholders}) RETURNING {SELECT_LIST}"  # noqa: S608 - whitelisted names
        try:
            with unavailable_on_error(self.path):
                rows = list(await self._db.execute_fetchall(sql, values))
        except sqlite3.IntegrityError as exc:
            if (
                new.parent_id is not None
                and getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY
            ):
                raise JobNotFoundError(f"parent job {new.parent_id} does not exist") from exc
            raise
        job = row_to_job(rows[0])
        log.info("job %d created", job.id, extra={"job_id": job.id})
        return job

    async def transition(
        self,
        job_id: int,
        state: JobState,
        *,
        expect: JobState | Collection[JobState],
        now: datetime,
        owner: str | None = None,
        **fields: Any,
    ) -> Job | None:
        """Compare-and-set: move the job to `state` only if it is in one of the `expect`ed states (and, with
        `owner`, only while `owner` holds its lease).

        Returns the job as written, or None when it was not in an expected state
        (another step got there first), is held by another owner, or does not
        exist: the loser of a race changes nothing. One UPDATE stamps the state's timestamp and
        `updated_at` and sets `fields`. The state's column records when the job
        *entered* it: moving to the state it is already in keeps the first
        stamp, and `created_at` is never moved. A field given explicitly wins
        over the stamp. Fields set to None are cleared.
        """
        state = JobState(state)
        check_fields(fields)
        assignments = {"state": ":state", "updated_at": ":now"}
        params: dict[str, Any] = {"job_id": job_id, "state": state.value, "now": to_text(now, "now")}
        stamped = STATE_TIMESTAMP[state]
        if stamped is not None and stamped != "created_at":
            assignments[stamped] = f"CASE WHEN state = :state AND {stamped} IS NOT NULL THEN {stamped} ELSE :now END"
        job = await self._update(job_id, assignments, params, fields, expected_states(expect), owner)
        if job is not None:
            log.info("job %d -> %s", job_id, state.value, extra={"job_id": job_id, "state": state.value})
        return job

    async def update(
        self,
        job_id: int,
        *,
        now: datetime,
        expect: JobState | Collection[JobState] | None = None,
        owner: str | None = None,
        **fields: Any,
    ) -> Job | None:
        """Set `fields` and `updated_at` without changing the state; with `expect`, only in those states; with
        `owner`, only while it holds the lease.

        None when the job does not exist or a condition did not hold.
        """
        check_fields(fields)
        params: dict[str, Any] = {"job_id": job_id, "now": to_text(now, "now")}
        states = None if expect is None else expected_states(expect)
        return await self._update(job_id, {"updated_at": ":now"}, params, fields, states, owner)

    async def give_input(self, job_id: int, image_id: int, *, now: datetime, owner: str | None = None) -> Job | None:
        """Name an edit's input image once it is in (storage/base.py says why this one fixed column is written)."""
        params: dict[str, Any] = {"job_id": job_id, "now": to_text(now, "now")}
        fields = {"input_image_id": image_id}
        return await self._update(job_id, {"updated_at": ":now"}, params, fields, [JobState.WAITING.value], owner)

    async def _update(
        self,
        job_id: int,
        assignments: dict[str, str],
        params: dict[str, Any],
        fields: dict[str, Any],
        expect: list[str] | None,
        owner: str | None,
    ) -> Job | None:
        for column, value in fields.items():
            assignments[column] = f":f_{column}"
            params[f"f_{column}"] = encode(column, value)
        sets = ", ".join(f"{column} = {expression}" for column, expression in assignments.items())
        where = "id = :job_id"
        if expect is not None:
            names = [f":expect_{index}" for index in range(len(expect))]
            params.update(zip((name[1:] for name in names), expect, strict=True))
            where += f" AND state IN ({', '.join(names)})"
        if owner is not None:
            params["owner"] = owner
            where += " AND lease_owner = :owner"
        sql = f"UPDATE jobs SET {sets} WHERE {where} RETURNING {SELECT_LIST}"  # noqa: S608 - whitelisted names
        with unavailable_on_error(self.path):
            rows = list(await self._db.execute_fetchall(sql, params))
        return row_to_job(rows[0]) if rows else None

    # Reads.

    async def get(self, job_id: int) -> Job | None:
        jobs = await self._select("WHERE id = ?", (job_id,))
        return jobs[0] if jobs else None

    async def unfinished(self) -> Sequence[Job]:
        """Every job not in a final state, oldest first: what a restart resumes."""
        with unavailable_on_error(self.path):
            rows = await self._db.execute_fetchall(UNFINISHED_SQL)
        return [row_to_job(row) for row in rows]

    async def owing_delivery(self) -> Sequence[Job]:
        """Jobs that still owe their member something (an image, or the notice of their end), soonest first:
        what the delivery worker resumes after a restart."""
        return await self._select("WHERE deliver_at IS NOT NULL ORDER BY deliver_at, id", ())

    async def channel_unfinished(self, channel_id: int) -> Sequence[Job]:
        """A channel's live jobs, oldest first (a deleted channel ends them)."""
        return await self._select(f"WHERE channel_id = ? AND {UNFINISHED_WHERE} ORDER BY created_at, id", (channel_id,))

    async def recent_timings(self, model: str, *, limit: int = 50) -> Sequence[Timing]:
        """Queue and run durations of the newest completed jobs of `model`, newest first.

        Rows missing a timestamp, or whose stamps run backwards (a job re-queued
        after it started), are skipped: they would teach the scheduler nonsense.
        """
        sql = (
            "SELECT queued_at, started_at, completed_at FROM jobs"
            " WHERE model = ? AND completed_at IS NOT NULL AND queued_at IS NOT NULL AND started_at IS NOT NULL"
            " AND queued_at <= started_at AND started_at <= completed_at"
            " ORDER BY completed_at DESC, id DESC LIMIT ?"
        )
        with unavailable_on_error(self.path):
            rows = await self._db.execute_fetchall(sql, (model, limit))
        timings = []
        for queued_at, started_at, completed_at in rows:
            queued, started, completed = from_text(queued_at), from_text(started_at), from_text(completed_at)
            timings.append(Timing((started - queued).total_seconds(), (completed - started).total_seconds()))
        return timings

    async def by_request_id(self, request_id: str) -> Job | None:
        """The job RunComfy knows as `request_id` (the newest, should an id ever repeat)."""
        jobs = await self._select("WHERE request_id = ? ORDER BY id DESC LIMIT 1", (request_id,))
        return jobs[0] if jobs else None

    async def by_message_id(self, message_id: int) -> Job | None:
        """The job whose reply is the Discord message `message_id` (what a reaction names)."""
        jobs = await self._select("WHERE message_id = ? ORDER BY id DESC LIMIT 1", (message_id,))
        return jobs[0] if jobs else None

    async def count_by_state(self) -> dict[JobState, int]:
        """How many jobs are in each state; every state is present, zero included."""
        with unavailable_on_error(self.path):
            rows = await self._db.execute_fetchall("SELECT state, count(*) FROM jobs GROUP BY state")
        counts = dict.fromkeys(JobState, 0)
        for state, count in rows:
            counts[JobState(state)] = count
        return counts

    async def jobs_for_user(self, user_id: int, *, guild_id: int | None = None, limit: int = 10) -> list[Job]:
        """A user's newest jobs, in one guild or (guild_id None) everywhere."""
        if guild_id is None:
            return await self._select("WHERE user_id = ? ORDER BY created_at DESC, id DESC LIMIT ?", (user_id, limit))
        return await self._select(
            "WHERE user_id = ? AND guild_id = ? ORDER BY created_at DESC, id DESC LIMIT ?", (user_id, guild_id, limit)
        )

    async def children(self, parent_id: int) -> list[Job]:
        """The rerolls of a job, oldest first."""
        return await self._select("WHERE parent_id = ? ORDER BY created_at, id", (parent_id,))

    # Community servers: slots, quotas, history and spend.

    async def guild_unfinished(self, guild_id: int) -> list[Job]:
        """A server's jobs not in a final state, oldest first: its slots in use and its waiting line."""
        return await self._select(f"WHERE guild_id = ? AND {UNFINISHED_WHERE} ORDER BY created_at, id", (guild_id,))

    async def guild_load(self, guild_id: int, user_id: int) -> GuildLoad:
        """One aggregate over the server's unfinished jobs: admission runs before the 3 s acknowledgement,
        so it must not load every row of a busy server."""
        with unavailable_on_error(self.path):
            rows = list(await self._db.execute_fetchall(_GUILD_LOAD_SQL, {"user": user_id, "guild": guild_id}))
        mine_active, mine_waiting, active, waiting = (int(count or 0) for count in rows[0])  # SUM of no rows: NULL
        return GuildLoad(mine_active=mine_active, mine_waiting=mine_waiting, active=active, waiting=waiting)

    async def billable_since(self, user_id: int, guild_id: int, since: datetime) -> list[datetime]:
        """When a member's images in a server that count against a quota were asked for, oldest first (a job of
        `count` images appears `count` times).

        Every job counts except those cancelled and those that failed before
        RunComfy accepted them (no request id): neither was charged.
        """
        sql = (
            f"SELECT created_at FROM jobs {PER_IMAGE} WHERE user_id = ? AND guild_id = ? AND created_at >= ?"  # noqa: S608
            " AND state != 'cancelled' AND NOT (state = 'failed' AND request_id IS NULL)"
            " ORDER BY created_at"
        )
        with unavailable_on_error(self.path):
            rows = await self._db.execute_fetchall(sql, (user_id, guild_id, to_text(since, "since")))
        return [from_text(row[0]) for row in rows]

    async def results_for_user(self, user_id: int, guild_id: int, *, limit: int = 10) -> list[Job]:
        """A member's delivered images in a server, newest first."""
        return await self._select(
            "WHERE user_id = ? AND guild_id = ? AND state = 'delivered' ORDER BY finished_at DESC, id DESC LIMIT ?",
            (user_id, guild_id, limit),
        )

    async def usage(self, guild_id: int, since: datetime, *, top: int = 5) -> Usage:
        """Images a server made (reached `completed`) since `since`, per UTC day, and its `top` members;
        pruned jobs count through their totals (storage/retention.py)."""
        return await retention.usage(self._db, self.path, guild_id, since, top=top)

    # Retention: old finished jobs go, their usage stays (storage/retention.py).

    async def prune(self, *, before: datetime) -> int:
        """Delete jobs in a final state that finished before `before`, folding their usage into totals."""
        return await retention.prune(self._db, self.path, before=before)

    async def prune_inputs(self, *, before: datetime) -> int:
        """Delete input images created before `before` that no job names (storage/retention.py)."""
        return await retention.prune_inputs(self._db, self.path, before=before)

    async def spend(self, *, day: datetime, month: datetime) -> tuple[Spend, Spend]:
        """The whole bot's spend since `day` and since `month`, in one aggregate (storage/spend.py)."""
        return await read_spend(self._db, self.path, day=day, month=month)

    async def count_unfinished_by_state(self) -> dict[JobState, int]:
        """Live jobs per non-final state, from the partial index alone: cheap enough for every scrape."""
        return await retention.count_unfinished_by_state(self._db, self.path)

    async def _select(self, where: str, params: Sequence[Any]) -> list[Job]:
        with unavailable_on_error(self.path):
            rows = await self._db.execute_fetchall(f"SELECT {SELECT_LIST} FROM jobs {where}", params)  # noqa: S608 - constant clauses
        return [row_to_job(row) for row in rows]


async def _check_read_only_version(db: aiosqlite.Connection, path: Path) -> int:
    version = await user_version(db)
    known = latest_version()
    if version > known:
        raise SchemaTooNewError(version, known)
    if version < known:
        raise StoreUnavailableError(
            path, f"schema version {version} needs migrating to {known}, which a read-only open cannot do"
        )
    return version


if TYPE_CHECKING:

    def _implements_protocol(store: SQLiteJobStore) -> JobStore:
        return store  # mypy fails here if SQLiteJobStore drifts from the JobStore protocol


async def _enter_wal(db: aiosqlite.Connection, patience: float) -> list[Any]:
    """Switch to WAL, waiting out another connection doing the same on a fresh file.

    Changing the journal mode needs an exclusive lock, and SQLite answers BUSY
    at once there (the busy handler is not called), so two processes starting
    together would otherwise fail one of them.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    while True:
        try:
            return list(await db.execute_fetchall("PRAGMA journal_mode = WAL"))
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) and "busy" not in str(error):
                raise
            if loop.time() >= deadline:
                raise
            await asyncio.sleep(0.02)
