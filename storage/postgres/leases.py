"""`PostgresJobLeases`: which process holds which live job, and how the others take over a dead one's jobs.

The jobs table is the truth: a job's holder is its `lease_owner` until
`lease_until`. The holder renews all its leases in one UPDATE every few
seconds; a process that dies stops renewing, and once its leases run out
every other process may claim its jobs. A claim is one UPDATE over the rows a
`SELECT ... FOR UPDATE SKIP LOCKED` picked, re-checking the lease on each: two
processes scanning at the same moment split the orphans between them (each
skips rows the other has locked) instead of queueing behind each other, and
under READ COMMITTED a row whose lease was renewed in between is not matched.

Every write of the job manager names its owner (`transition(..., owner=)`),
so once another process has claimed a job, the process that lost it can no
longer change it: its next write matches nothing.

`publish`/`subscribe` are LISTEN/NOTIFY on one channel, on the process's own
connection (storage/postgres/control.py): "jobs were released, look now", or
"a job you hold was cancelled here".
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from datetime import datetime
from typing import TYPE_CHECKING, Any

from storage.columns import LIVE_WHERE, SELECT_LIST, job_from_values
from storage.models import Job
from storage.postgres.connect import aware, unavailable_on_error

if TYPE_CHECKING:
    import asyncpg

    from storage.base import JobLeases
    from storage.postgres.connect import Pool
    from storage.postgres.control import Control

log = logging.getLogger(__name__)

CHANNEL = "imagine_jobs"
_FREE = "(lease_owner IS NULL OR lease_until < $2)"
_CLAIM_SQL = (
    f"UPDATE jobs SET lease_owner = $3, lease_until = $4 WHERE id IN ("  # noqa: S608 - constant clauses
    f" SELECT id FROM jobs WHERE id = ANY($1::bigint[]) AND {LIVE_WHERE} AND {_FREE}"
    " ORDER BY id FOR UPDATE SKIP LOCKED)"
    f" AND {LIVE_WHERE} AND {_FREE} RETURNING {SELECT_LIST}"
)
_ADOPT_SQL = (
    f"UPDATE jobs SET lease_owner = $2, lease_until = $3 WHERE lease_owner = $1 AND {LIVE_WHERE}"  # noqa: S608
    f" RETURNING {SELECT_LIST}"
)
_RENEW_SQL = f"UPDATE jobs SET lease_until = $2 WHERE lease_owner = $1 AND {LIVE_WHERE}"  # noqa: S608
_RELEASE_SQL = f"UPDATE jobs SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = $1 AND {LIVE_WHERE}"  # noqa: S608
_RELEASE_SOME_SQL = f"{_RELEASE_SQL} AND id = ANY($2::bigint[])"
# Not this process's own: a lease of its own that ran out (a renewal came late) is still its job, mid-step maybe.
_ORPHANS_SQL = (
    f"SELECT {SELECT_LIST} FROM jobs WHERE {LIVE_WHERE} AND channel_id IS NOT NULL"  # noqa: S608 - constants
    " AND (lease_owner IS NULL OR lease_until < $1) AND lease_owner IS DISTINCT FROM $3"
    " ORDER BY created_at, id LIMIT $2"
)
# A free lease counts as long run out (the epoch).
_NEXT_EXPIRY_SQL = (
    "SELECT min(COALESCE(lease_until, 'epoch'::timestamptz)) FROM jobs"  # noqa: S608 - constants
    f" WHERE {LIVE_WHERE} AND channel_id IS NOT NULL AND lease_owner IS DISTINCT FROM $1"
)


def _count(status: str) -> int:
    """The row count of an "UPDATE n" status."""
    return int(status.rsplit(" ", 1)[-1])


class PostgresJobLeases:
    """Leases on jobs in PostgreSQL (see the module docstring); the store's `leases`."""

    def __init__(self, pool: Pool, url: str, control: Control) -> None:
        self._pool = pool
        self._url = url
        self._control = control

    async def _jobs(self, sql: str, *args: Any) -> list[Job]:
        with unavailable_on_error(self._url):
            rows: list[asyncpg.Record] = await self._pool.fetch(sql, *args)
        return [job_from_values(row) for row in rows]

    async def _execute(self, sql: str, *args: Any) -> int:
        with unavailable_on_error(self._url):
            return _count(await self._pool.execute(sql, *args))

    async def claim(self, job_ids: Collection[int], owner: str, *, until: datetime, now: datetime) -> list[Job]:
        """Take those of `job_ids` that are live and whose lease is free or ran out, skipping rows another
        process is claiming right now; the jobs as claimed, oldest first."""
        if not job_ids:
            return []
        claimed = await self._jobs(_CLAIM_SQL, list(job_ids), aware(now, "now"), owner, aware(until, "until"))
        return sorted(claimed, key=lambda job: (job.created_at, job.id))

    async def adopt(self, previous: str, owner: str, *, until: datetime) -> list[Job]:
        """Take every live job `previous` holds, whatever its lease says (its process is known to be gone)."""
        adopted = await self._jobs(_ADOPT_SQL, previous, owner, aware(until, "until"))
        return sorted(adopted, key=lambda job: (job.created_at, job.id))

    async def renew(self, owner: str, *, until: datetime) -> int:
        """Extend `owner`'s leases on live jobs to `until` (and make sure notifications still reach us)."""
        renewed = await self._execute(_RENEW_SQL, owner, aware(until, "until"))
        await self._control.check()
        return renewed

    async def release(self, owner: str, *, job_ids: Collection[int] | None = None) -> int:
        """Give up `owner`'s leases on live jobs (only on `job_ids`, when given), so other processes can claim
        them without waiting."""
        if job_ids is None:
            return await self._execute(_RELEASE_SQL, owner)
        return await self._execute(_RELEASE_SOME_SQL, owner, list(job_ids))

    async def orphans(self, owner: str, *, now: datetime, limit: int) -> list[Job]:
        """Live Discord jobs whose lease is free or ran out, other than `owner`'s own, oldest first (CLI jobs
        have no channel: the command line that made them resumes them, never the bot)."""
        return await self._jobs(_ORPHANS_SQL, aware(now, "now"), limit, owner)

    async def next_expiry(self, owner: str) -> datetime | None:
        """When the next lease not held by `owner` runs out; a free lease is reported as long past."""
        with unavailable_on_error(self._url):
            found: datetime | None = await self._pool.fetchval(_NEXT_EXPIRY_SQL, owner)
        return found

    async def publish(self, message: str) -> None:
        with unavailable_on_error(self._url):
            await self._pool.execute("SELECT pg_notify($1, $2)", CHANNEL, message)

    async def subscribe(self, listener: Callable[[str], None]) -> None:
        await self._control.listen(CHANNEL, listener)


if TYPE_CHECKING:

    def _implements_protocol(leases: PostgresJobLeases) -> JobLeases:
        return leases
