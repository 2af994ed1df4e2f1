"""`PostgresJobStore`: the job table in PostgreSQL, shared by every bot process through one asyncpg pool.

The same promise as the SQLite store: every write is a single autocommitted
statement (`INSERT/UPDATE ... RETURNING`), committed when the coroutine returns,
so the state is in the database before the next side effect. Several processes
can therefore write at once without ever seeing half of another's change.

Semantics match `storage.sqlite.SQLiteJobStore` method for method (its
docstrings are the reference; the store tests run against both): datetimes are
timestamptz and come back timezone-aware in UTC, naive ones are refused; a
transition is a compare-and-set on the state (`WHERE id = $n AND state =
ANY($m)`), returning None to the loser of a race or for an unknown id; a
transition into the state a job is already in keeps the first stamp;
JobNotFoundError for an unknown parent. Text is ordered byte-wise
(`COLLATE "C"`), as SQLite does, whatever the database's locale.

Column lists come from `storage.columns` (derived from the dataclasses), and
each query is written once, here.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Collection, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import asyncpg

from storage.base import JobNotFoundError
from storage.columns import (
    BOOL_COLUMNS,
    CREATE_STATES,
    DATETIME_COLUMNS,
    ONCE_KEPT,
    ORIGIN_COLUMNS,
    PER_IMAGE,
    SELECT_LIST,
    UNFINISHED_WHERE,
    check_fields,
    check_once_window,
    expected_states,
    job_from_values,
    new_job_values,
)
from storage.migrate import SchemaTooNewError
from storage.models import (
    STATE_TIMESTAMP,
    FailureKind,
    GuildLoad,
    Job,
    JobState,
    Lease,
    NewJob,
    Spend,
    Timing,
    Usage,
)
from storage.postgres import reports
from storage.postgres.connect import aware, connect, create_pool, redact_url, unavailable_on_error
from storage.postgres.control import Control
from storage.postgres.guilds import PostgresGuildStore
from storage.postgres.job_inputs import PostgresJobInputs
from storage.postgres.leases import PostgresJobLeases
from storage.postgres.migrate import bundled_migrations, migrate, schema_version
from storage.postgres.polling_memory import PostgresPollingMemory
from storage.sqlite_common import StoreUnavailableError

if TYPE_CHECKING:
    from storage.base import JobStore
    from storage.postgres.connect import Connection, Pool

log = logging.getLogger(__name__)

_SELECT = f"SELECT {SELECT_LIST} FROM jobs"  # noqa: S608 - constant column names
UNFINISHED_SQL = f"{_SELECT} WHERE {UNFINISHED_WHERE} ORDER BY created_at, id"
# Insert the key, or take over one older than the window; no row comes back when a live key is in the way.
_ONCE_SQL = (
    "INSERT INTO once_keys AS o (key, at) VALUES ($1, $2)"
    " ON CONFLICT (key) DO UPDATE SET at = EXCLUDED.at WHERE o.at <= $3 RETURNING key"
)
_TIMINGS_SQL = (
    "SELECT queued_at, started_at, completed_at FROM jobs"
    " WHERE model = $1 AND completed_at IS NOT NULL AND queued_at IS NOT NULL AND started_at IS NOT NULL"
    " AND queued_at <= started_at AND started_at <= completed_at"
    " ORDER BY completed_at DESC, id DESC LIMIT $2"
)
_BILLABLE_SQL = (
    f"SELECT created_at FROM jobs {PER_IMAGE} WHERE user_id = $1 AND guild_id = $2 AND created_at >= $3"  # noqa: S608
    " AND state <> 'cancelled' AND NOT (state = 'failed' AND request_id IS NULL)"
    " ORDER BY created_at"
)


class _Args:
    """asyncpg's positional parameters: each value added returns its placeholder ($1, $2, ...)."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def _encode(column: str, value: Any) -> Any:
    """Check what asyncpg would otherwise accept or guess at: naive datetimes and ints posing as bools."""
    if value is None:
        return None
    if column in DATETIME_COLUMNS:
        return aware(value, column)
    if column in BOOL_COLUMNS and not isinstance(value, bool):
        raise TypeError(f"{column} must be a bool, got {type(value).__name__}")
    if column == "failure_kind":
        return FailureKind(value).value
    return value


def _job(row: asyncpg.Record) -> Job:
    return job_from_values(row)


class PostgresJobStore:
    """The `JobStore` over an asyncpg pool (one per process; several processes share the database)."""

    def __init__(self, pool: Pool, url: str, schema_version: int) -> None:
        """Use `open()`: it connects and migrates before anyone can write."""
        self._pool = pool
        self._url = url  # kept for scrubbing driver errors; never logged
        self.where = redact_url(url)
        self.schema_version = schema_version
        self.guilds = PostgresGuildStore(pool, url)
        self.polling = PostgresPollingMemory(pool, url)
        self._control = Control(url, functools.partial(connect, url))
        self.leases = PostgresJobLeases(pool, url, self._control)
        self.inputs = PostgresJobInputs(pool, url)

    def exclusive(self, key: int) -> AbstractAsyncContextManager[None]:
        """A PostgreSQL advisory lock on `key`, so one task of all processes holds it (storage/postgres/control.py)."""
        return self._control.exclusive(key)

    async def once(self, key: str, *, now: datetime, window: timedelta) -> bool:
        """True for the first call with `key` within `window`, from any process: one UPSERT that rewrites only a
        key older than the window, so of two processes racing only one sees its row come back."""
        check_once_window(window)
        now = aware(now, "now")
        with unavailable_on_error(self._url):
            await self._pool.execute("DELETE FROM once_keys WHERE at <= $1", now - ONCE_KEPT)
            return await self._pool.fetchrow(_ONCE_SQL, key, now, now - window) is not None

    @property
    def pool(self) -> Pool:
        """The store's pool, for the process registry and the shared budget to use the same connections."""
        return self._pool

    @classmethod
    async def open(
        cls, url: str, *, min_size: int = 1, max_size: int = 10, migrate_schema: bool = True, **pool_options: Any
    ) -> PostgresJobStore:
        """Connect a pool to `url` and migrate the database (or, with `migrate_schema=False`, insist it is current).

        Raises StoreUnavailableError when the server cannot be reached or used,
        SchemaTooNewError for a database a newer release migrated, ValueError
        for a URL that is not PostgreSQL's. None of them contain the password.
        """
        pool = await create_pool(url, min_size=min_size, max_size=max_size, **pool_options)
        try:
            with unavailable_on_error(url):
                async with pool.acquire() as conn:
                    if migrate_schema:
                        version = await migrate(conn, bundled_migrations())
                    else:
                        version = await _check_version(conn, url)
        except BaseException:
            pool.terminate()
            raise
        log.info("PostgreSQL job store at %s, schema version %d", redact_url(url), version)
        return cls(pool, url, version)

    async def close(self) -> None:
        """Close the pool, waiting for borrowed connections to come back; closing twice is harmless."""
        await self._control.close()
        await self._pool.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        with unavailable_on_error(self._url):
            return await self._pool.fetch(sql, *args)

    async def _fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        with unavailable_on_error(self._url):
            return await self._pool.fetchrow(sql, *args)

    async def _select(self, where: str, *args: Any) -> list[Job]:
        return [_job(row) for row in await self._fetch(f"{_SELECT} {where}", *args)]

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
        """Insert a job in state `submitting` (or `waiting`, for a slot), held by `lease` when given;
        JobNotFoundError if the parent is unknown.

        A reroll or remix names its source's stored image (`StoredInput`; storage/job_inputs.py); a member's
        new image is read after its job is written, then stored and named (`give_input`).
        """
        if state not in CREATE_STATES:
            raise ValueError(f"a job starts in submitting or waiting, not {state}")
        stamp = aware(now, "now")
        values: dict[str, Any] = {
            "model": new.model,
            "prompt": new.prompt,
            "aspect_ratio": new.aspect_ratio,
            "seed": new.seed,
            "state": JobState(state).value,
            "parent_id": new.parent_id,
            "exempt": new.exempt,
            "post_nonce": post_nonce,
            "created_at": stamp,
            "updated_at": stamp,
            "lease_owner": lease.owner if lease else None,
            "lease_until": aware(lease.until, "lease.until") if lease else None,
        }
        for column in ORIGIN_COLUMNS:
            values[column] = _encode(column, getattr(new.origin, column))
        values.update((column, _encode(column, value)) for column, value in new_job_values(new).items())
        args = _Args()
        placeholders = ", ".join(args(value) for value in values.values())
        sql = f"INSERT INTO jobs ({', '.join(values)}) VALUES ({placeholders}) RETURNING {SELECT_LIST}"  # noqa: S608
        try:
            row = await self._fetchrow(sql, *args.values)
        except asyncpg.ForeignKeyViolationError as exc:
            if new.parent_id is not None:
                raise JobNotFoundError(f"parent job {new.parent_id} does not exist") from exc
            raise
        if row is None:
            raise RuntimeError("INSERT ... RETURNING returned no row")
        job = _job(row)
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

        The job as written, or None when a condition did not hold or the job does
        not exist. Under READ COMMITTED the second of two racing UPDATEs waits
        for the first's row lock, re-checks `state` and `lease_owner` on the
        committed row and matches nothing: the loser changes nothing. The state's column records
        when the job *entered* it (a repeated state keeps the first stamp,
        `created_at` never moves); an explicit field wins over the stamp; fields
        set to None are cleared.
        """
        state = JobState(state)
        check_fields(fields)
        args = _Args()
        entered, stamp = args(state.value), args(aware(now, "now"))
        assignments = {"state": entered, "updated_at": stamp}
        stamped = STATE_TIMESTAMP[state]
        if stamped is not None and stamped != "created_at":
            assignments[stamped] = (
                f"CASE WHEN state = {entered} AND {stamped} IS NOT NULL THEN {stamped} ELSE {stamp} END"
            )
        job = await self._update(job_id, assignments, args, fields, expected_states(expect), owner)
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
        args = _Args()
        states = None if expect is None else expected_states(expect)
        return await self._update(job_id, {"updated_at": args(aware(now, "now"))}, args, fields, states, owner)

    async def give_input(self, job_id: int, image_id: int, *, now: datetime, owner: str | None = None) -> Job | None:
        """Name an edit's input image once it is in (storage/base.py says why this one fixed column is written)."""
        args = _Args()
        fields = {"input_image_id": image_id}
        return await self._update(job_id, {"updated_at": args(aware(now, "now"))}, args, fields, ["waiting"], owner)

    async def _update(
        self,
        job_id: int,
        assignments: dict[str, str],
        args: _Args,
        fields: dict[str, Any],
        expect: list[str] | None,
        owner: str | None,
    ) -> Job | None:
        for column, value in fields.items():
            assignments[column] = args(_encode(column, value))
        sets = ", ".join(f"{column} = {expression}" for column, expression in assignments.items())
        where = f"id = {args(job_id)}"
        if expect is not None:
            where += f" AND state = ANY({args(expect)}::text[])"
        if owner is not None:
            where += f" AND lease_owner = {args(owner)}"
        sql = f"UPDATE jobs SET {sets} WHERE {where} RETURNING {SELECT_LIST}"  # noqa: S608 - checked names
        row = await self._fetchrow(sql, *args.values)
        return None if row is None else _job(row)

    # Reads.

    async def get(self, job_id: int) -> Job | None:
        jobs = await self._select("WHERE id = $1", job_id)
        return jobs[0] if jobs else None

    async def unfinished(self) -> Sequence[Job]:
        """Every job not in a final state, oldest first: what a restart resumes."""
        return [_job(row) for row in await self._fetch(UNFINISHED_SQL)]

    async def owing_delivery(self) -> Sequence[Job]:
        """Jobs that still owe their member something (an image, or the notice of their end), soonest first:
        what the delivery worker resumes after a restart (index jobs_deliver_at)."""
        return await self._select("WHERE deliver_at IS NOT NULL ORDER BY deliver_at, id")

    async def channel_unfinished(self, channel_id: int) -> Sequence[Job]:
        """A channel's live jobs, oldest first (a deleted channel ends them; index jobs_channel_unfinished)."""
        return await self._select(f"WHERE channel_id = $1 AND {UNFINISHED_WHERE} ORDER BY created_at, id", channel_id)

    async def recent_timings(self, model: str, *, limit: int = 50) -> Sequence[Timing]:
        """Queue and run durations of the newest completed jobs of `model`, newest first (rows with missing or
        backwards stamps skipped)."""
        return [
            Timing((started - queued).total_seconds(), (completed - started).total_seconds())
            for queued, started, completed in await self._fetch(_TIMINGS_SQL, model, limit)
        ]

    async def by_request_id(self, request_id: str) -> Job | None:
        """The job RunComfy knows as `request_id` (the newest, should an id ever repeat)."""
        jobs = await self._select("WHERE request_id = $1 ORDER BY id DESC LIMIT 1", request_id)
        return jobs[0] if jobs else None

    async def by_message_id(self, message_id: int) -> Job | None:
        """The job whose reply is the Discord message `message_id` (what a reaction names)."""
        jobs = await self._select("WHERE message_id = $1 ORDER BY id DESC LIMIT 1", message_id)
        return jobs[0] if jobs else None

    async def count_by_state(self) -> dict[JobState, int]:
        """How many jobs are in each state; every state is present, zero included."""
        counts = dict.fromkeys(JobState, 0)
        for state, count in await self._fetch("SELECT state, count(*) FROM jobs GROUP BY state"):
            counts[JobState(state)] = count
        return counts

    async def jobs_for_user(self, user_id: int, *, guild_id: int | None = None, limit: int = 10) -> list[Job]:
        """A user's newest jobs, in one guild or (guild_id None) everywhere."""
        if guild_id is None:
            return await self._select("WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2", user_id, limit)
        return await self._select(
            "WHERE user_id = $1 AND guild_id = $2 ORDER BY created_at DESC, id DESC LIMIT $3", user_id, guild_id, limit
        )

    async def children(self, parent_id: int) -> list[Job]:
        """The rerolls of a job, oldest first."""
        return await self._select("WHERE parent_id = $1 ORDER BY created_at, id", parent_id)

    # Community servers: slots, quotas, history and spend.

    async def guild_unfinished(self, guild_id: int) -> list[Job]:
        """A server's jobs not in a final state, oldest first: its slots in use and its waiting line."""
        return await self._select(f"WHERE guild_id = $1 AND {UNFINISHED_WHERE} ORDER BY created_at, id", guild_id)

    async def guild_load(self, guild_id: int, user_id: int) -> GuildLoad:
        """One aggregate over the server's unfinished jobs (admission runs before the 3 s acknowledgement)."""
        with unavailable_on_error(self._url):
            return await reports.guild_load(self._pool, guild_id, user_id)

    async def billable_since(self, user_id: int, guild_id: int, since: datetime) -> list[datetime]:
        """When a member's jobs in a server that count against a quota were created, oldest first (not cancelled,
        not failed before RunComfy accepted them)."""
        rows = await self._fetch(_BILLABLE_SQL, user_id, guild_id, aware(since, "since"))
        return [row[0] for row in rows]

    async def results_for_user(self, user_id: int, guild_id: int, *, limit: int = 10) -> list[Job]:
        """A member's delivered images in a server, newest first."""
        return await self._select(
            "WHERE user_id = $1 AND guild_id = $2 AND state = 'delivered' ORDER BY finished_at DESC, id DESC LIMIT $3",
            user_id,
            guild_id,
            limit,
        )

    async def usage(self, guild_id: int, since: datetime, *, top: int = 5) -> Usage:
        """Images a server made (reached `completed`) since `since`, per UTC day, and its `top` members;
        pruned jobs count through their totals (storage/postgres/reports.py)."""
        with unavailable_on_error(self._url):
            return await reports.usage(self._pool, guild_id, aware(since, "since"), top=top)

    # Retention: old finished jobs go, their usage stays (storage/postgres/reports.py).

    async def prune(self, *, before: datetime) -> int:
        """Delete jobs in a final state that finished before `before`, folding their usage into totals."""
        with unavailable_on_error(self._url):
            return await reports.prune(self._pool, before=aware(before, "before"))

    async def prune_inputs(self, *, before: datetime) -> int:
        """Delete input images created before `before` that no job names (storage/postgres/reports.py)."""
        with unavailable_on_error(self._url):
            return await reports.prune_inputs(self._pool, before=aware(before, "before"))

    async def spend(self, *, day: datetime, month: datetime) -> tuple[Spend, Spend]:
        """The whole bot's spend since `day` and since `month`, for the operator's budget (reports.py)."""
        with unavailable_on_error(self._url):
            return await reports.spend(self._pool, day=aware(day, "day"), month=aware(month, "month"))

    async def count_unfinished_by_state(self) -> dict[JobState, int]:
        """Live jobs per non-final state, from a partial index of live jobs: cheap enough for every scrape."""
        with unavailable_on_error(self._url):
            return await reports.count_unfinished_by_state(self._pool)


async def _check_version(conn: Connection, url: str) -> int:
    """The version of a database opened without migrating: it must be exactly this release's."""
    version = await schema_version(conn)
    known = len(bundled_migrations())
    if version > known:
        raise SchemaTooNewError(version, known)
    if version < known:
        raise StoreUnavailableError(
            redact_url(url), f"schema version {version} needs migrating to {known}; open it once with migrations"
        )
    return version


if TYPE_CHECKING:

    def _implements_protocol(store: PostgresJobStore) -> JobStore:
        return store  # mypy fails here if PostgresJobStore drifts from the JobStore protocol
