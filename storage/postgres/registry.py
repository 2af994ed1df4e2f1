"""`ProcessRegistry`: which bot process runs which Discord shards, kept in PostgreSQL.

Several processes share one database, each running its own `SHARD_IDS` of the
same `SHARD_COUNT`. Two processes running the same shard would answer every
command twice, so a process registers before it connects to Discord and is
refused, with one sentence naming the other process, when a live process
already runs any of its shards or runs with another SHARD_COUNT. An unsharded
process is shard 0 of 1, so two unsharded processes refuse each other too.

Live means a heartbeat newer than the lease. A process renews it (every third
of the lease or so); one that stops doing so, crashed or cut off, is stale: it
blocks nobody, and the next process to register deletes its row. If the stale
one comes back, its next heartbeat finds no row and returns False: it must stop
running those shards.

Registration runs in one transaction under a transaction advisory lock, so two
processes registering at the same moment are serialised: the second sees the
first's row. Heartbeats need no lock: a registration deleting a stale row and
that row's own heartbeat meet on the row lock, and whichever commits first wins
(the other re-checks the committed row under READ COMMITTED).

A process restarted on the same host with the same shards (a crash, then
the service manager starting it again) meets its own previous run, still
"live" for up to a lease. `is_silent` tells the two cases apart by watching
the holder's heartbeat for longer than two heartbeat intervals: a dead
process's does not move, and `register(..., replaces=holder)` then deletes
that row (only if its heartbeat still has not moved) and takes its place; its
jobs can be adopted at once instead of waiting for their leases to run out.

Times are passed in (`now`), like everywhere in the stores: the hosts' clocks
must agree to well within the lease, which NTP gives.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg

from storage.postgres.connect import aware

if TYPE_CHECKING:
    from storage.postgres.connect import Pool

log = logging.getLogger(__name__)

# pg_advisory_xact_lock's key for "registering a process": any constant, the same in every release.
REGISTRATION_LOCK = 0x7368617264  # "shard"

_COLUMNS = "process_id, host, pid, shard_count, shard_ids, started_at, heartbeat_at"
_DELETE_STALE_SQL = "DELETE FROM processes WHERE heartbeat_at < $1 AND process_id <> $2 RETURNING process_id, host"
# Rows older than the lease are deleted before this runs at registration; `check` passes that bound as $4.
_CONFLICT_SQL = (
    f"SELECT {_COLUMNS} FROM processes WHERE process_id <> $1"  # noqa: S608 - constant column names
    " AND (shard_count <> $2 OR shard_ids && $3::integer[]) AND heartbeat_at >= $4"
    " ORDER BY started_at, process_id LIMIT 1"
)
_UPSERT_SQL = (
    f"INSERT INTO processes ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $6)"  # noqa: S608 - constant column names
    " ON CONFLICT (process_id) DO UPDATE SET host = EXCLUDED.host, pid = EXCLUDED.pid,"
    " shard_count = EXCLUDED.shard_count, shard_ids = EXCLUDED.shard_ids,"
    " started_at = EXCLUDED.started_at, heartbeat_at = EXCLUDED.heartbeat_at"
    f" RETURNING {_COLUMNS}"
)
_DELETE_SILENT_SQL = "DELETE FROM processes WHERE process_id = $1 AND heartbeat_at = $2 RETURNING process_id"
_ROW_SQL = f"SELECT {_COLUMNS} FROM processes WHERE process_id = $1"  # noqa: S608 - constant column names
_HEARTBEAT_SQL = "UPDATE processes SET heartbeat_at = $2 WHERE process_id = $1 RETURNING process_id"
_LIVE_SQL = f"SELECT {_COLUMNS} FROM processes WHERE heartbeat_at >= $1 ORDER BY shard_ids, process_id"  # noqa: S608


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """One registered process: where it runs, its shards, when it started and last said it was alive."""

    process_id: str
    host: str
    pid: int
    shard_count: int
    shard_ids: tuple[int, ...]
    started_at: datetime
    heartbeat_at: datetime

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> ProcessInfo:
        return cls(
            process_id=row["process_id"],
            host=row["host"],
            pid=row["pid"],
            shard_count=row["shard_count"],
            shard_ids=tuple(row["shard_ids"]),
            started_at=row["started_at"],
            heartbeat_at=row["heartbeat_at"],
        )


class ShardsTakenError(RuntimeError):
    """A live process already runs some of these shards, or runs with another SHARD_COUNT.

    The message is one sentence an operator can act on; `holder` is the
    process in the way.
    """

    def __init__(self, message: str, holder: ProcessInfo) -> None:
        super().__init__(message)
        self.holder = holder


def _since(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def conflict_sentence(shard_count: int, shard_ids: tuple[int, ...], holder: ProcessInfo) -> str:
    """Why `holder` keeps a process with these shards from starting, and what to change."""
    where = f"process {holder.process_id} on host {holder.host} (pid {holder.pid})"
    if holder.shard_count != shard_count:
        return (
            f"SHARD_COUNT {shard_count} differs from the {holder.shard_count} that {where} has run with"
            f" since {_since(holder.started_at)}; give every process the same SHARD_COUNT"
        )
    common = sorted(set(shard_ids) & set(holder.shard_ids))
    noun = "shard" if len(common) == 1 else "shards"
    verb = "is" if len(common) == 1 else "are"
    return (
        f"{noun} {','.join(map(str, common))} {verb} already run by {where} since {_since(holder.started_at)};"
        " give each process its own SHARD_IDS"
    )


def _check_shards(shard_count: int, shard_ids: tuple[int, ...]) -> None:
    if shard_count < 1:
        raise ValueError(f"shard_count must be at least 1, got {shard_count}")
    if not shard_ids:
        raise ValueError("a process must run at least one shard")
    if len(set(shard_ids)) != len(shard_ids):
        raise ValueError(f"shard ids repeat: {shard_ids}")
    outside = [shard for shard in shard_ids if not 0 <= shard < shard_count]
    if outside:
        raise ValueError(f"shard ids {outside} are outside 0..{shard_count - 1} (SHARD_COUNT {shard_count})")


class ProcessRegistry:
    """Register, renew and remove this process's claim on its shards; see the module docstring."""

    def __init__(self, pool: Pool, *, lease: timedelta = timedelta(seconds=60)) -> None:
        """`lease`: how long after its last heartbeat a process still counts as alive."""
        if lease <= timedelta(0):
            raise ValueError("the lease must be positive")
        self._pool = pool
        self.lease = lease

    async def register(
        self,
        process_id: str,
        *,
        host: str,
        pid: int,
        shard_count: int,
        shard_ids: tuple[int, ...],
        now: datetime,
        replaces: ProcessInfo | None = None,
    ) -> ProcessInfo:
        """Claim `shard_ids` of `shard_count` for this process; ShardsTakenError if a live process is in the way.

        Registering again under the same `process_id` replaces its own row
        (a restart that kept its id). Stale rows of other processes are deleted,
        and so is `replaces` (a process `is_silent` found dead) if its heartbeat
        is still the one seen then.
        """
        shard_ids = tuple(sorted(shard_ids))
        _check_shards(shard_count, shard_ids)
        now = aware(now, "now")
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", REGISTRATION_LOCK)
            for stale in await conn.fetch(_DELETE_STALE_SQL, now - self.lease, process_id):
                log.warning("removed stale process %s on host %s from the registry", stale[0], stale[1])
            if replaces is not None and await conn.fetchrow(
                _DELETE_SILENT_SQL, replaces.process_id, replaces.heartbeat_at
            ):
                log.warning("replacing process %s, silent since %s", replaces.process_id, _since(replaces.heartbeat_at))
            row = await conn.fetchrow(_CONFLICT_SQL, process_id, shard_count, list(shard_ids), now - self.lease)
            if row is not None:
                holder = ProcessInfo.from_row(row)
                raise ShardsTakenError(conflict_sentence(shard_count, shard_ids, holder), holder)
            row = await conn.fetchrow(_UPSERT_SQL, process_id, host, pid, shard_count, list(shard_ids), now)
        if row is None:
            raise RuntimeError("INSERT ... RETURNING returned no row")
        me = ProcessInfo.from_row(row)
        log.info("registered process %s for shards %s of %d", process_id, ",".join(map(str, shard_ids)), shard_count)
        return me

    async def in_the_way(self, shard_count: int, shard_ids: tuple[int, ...], *, now: datetime) -> ProcessInfo | None:
        """The live process that would keep a process with these shards from registering now, if any (read
        only: what `python -m bot check` reports)."""
        shard_ids = tuple(sorted(shard_ids))
        _check_shards(shard_count, shard_ids)
        now = aware(now, "now")
        row = await self._pool.fetchrow(_CONFLICT_SQL, "", shard_count, list(shard_ids), now - self.lease)
        return None if row is None else ProcessInfo.from_row(row)

    async def is_silent(self, holder: ProcessInfo, *, wait: float) -> bool:
        """Watch `holder` for `wait` seconds (longer than its heartbeat interval): True if its heartbeat did not
        move (or its row went), so it is dead even though its lease has not run out yet."""
        await asyncio.sleep(wait)
        row = await self._pool.fetchrow(_ROW_SQL, holder.process_id)
        return row is None or row["heartbeat_at"] == holder.heartbeat_at

    async def heartbeat(self, process_id: str, *, now: datetime) -> bool:
        """Say this process is alive; False if its row is gone (it was stale and another took over): stop."""
        return await self._pool.fetchrow(_HEARTBEAT_SQL, process_id, aware(now, "now")) is not None

    async def deregister(self, process_id: str) -> bool:
        """Remove this process's row on a clean shutdown, freeing its shards at once; False if it was not there."""
        status = await self._pool.execute("DELETE FROM processes WHERE process_id = $1", process_id)
        return status == "DELETE 1"

    async def live(self, *, now: datetime) -> list[ProcessInfo]:
        """The processes whose heartbeat is within the lease, by shard."""
        rows = await self._pool.fetch(_LIVE_SQL, aware(now, "now") - self.lease)
        return [ProcessInfo.from_row(row) for row in rows]
