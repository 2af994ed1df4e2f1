"""The aggregates and the retention of `PostgresJobStore`: admission counts, usage, pruning, live-job counts.

PostgreSQL's side of `storage/retention.py`, with the same numbers. Each read
is one statement that counts in the database instead of loading rows:
admission runs before Discord's 3 s acknowledgement, a usage report may cover
thousands of images, and health and metrics ask for live counts often.

Old finished jobs are deleted by `prune` a few hundred per statement; the
`jobs_fold_usage` trigger (migrations_pg/0006) folds every deleted row that
reached `completed` into `usage_totals` inside the same DELETE, and `usage`
reads live rows and totals together, so a report says the same before and
after a prune. Costs are summed as whole billionths of a dollar through the
one SQL function `nanousd()` that the trigger uses too (SQLite's rounding,
see the migration), so the sums are exact and equal to SQLite's.

Totals keep no time of day: a report starting mid-day counts folded totals
only for the days after `since`'s UTC day, as in SQLite (see retention.py for
why that is exact with the default retention).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import TYPE_CHECKING

from storage.columns import ACTIVE_LIST, FINAL_LIST, UNFINISHED_WHERE
from storage.models import GuildLoad, JobState, MemberUsage, Spend, Usage, UsageDay
from storage.retention import IMAGE_BATCH

if TYPE_CHECKING:
    from storage.postgres.connect import Pool

log = logging.getLogger(__name__)

PRUNE_BATCH = 500
NANO = 1_000_000_000

_GUILD_LOAD_SQL = (
    f"SELECT count(*) FILTER (WHERE user_id = $2 AND state IN ({ACTIVE_LIST})),"  # noqa: S608 - constant clauses
    " count(*) FILTER (WHERE user_id = $2 AND state = 'waiting'),"
    f" count(*) FILTER (WHERE state IN ({ACTIVE_LIST})),"
    " count(*) FILTER (WHERE state = 'waiting')"
    f" FROM jobs WHERE guild_id = $1 AND {UNFINISHED_WHERE}"
)

# SKIP LOCKED: a row another process is writing (or pruning) right now is left for the next batch or the next
# day, so a prune never waits on the bot's own writes and two pruning processes take different rows.
_PRUNE_SQL = (
    "DELETE FROM jobs WHERE id IN ("  # noqa: S608 - constants only
    f"SELECT id FROM jobs WHERE state IN ({FINAL_LIST}) AND coalesce(finished_at, created_at) < $1"
    " ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING id"
)
# Input images no job names any more (storage/retention.py says why); one a new job is taking (its foreign key
# check holds a lock on it) is skipped, not waited for.
_PRUNE_IMAGES_SQL = (
    "DELETE FROM input_images WHERE id IN (SELECT id FROM input_images WHERE created_at < $1"
    " AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.input_image_id = input_images.id)"
    " LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING id"
)
UNFINISHED_COUNT_SQL = f"SELECT state, count(*) FROM jobs WHERE {UNFINISHED_WHERE} GROUP BY state"  # noqa: S608

# Live rows, summed exactly as the trigger folds them. Days are UTC days whatever the session's time zone.
_LIVE = (
    "SELECT (completed_at AT TIME ZONE 'UTC')::date AS day, user_id, count AS images, nanousd(cost_usd) AS nanos,"
    " (cost_estimated AND cost_usd IS NOT NULL)::int * count AS estimated,"
    " (cost_usd IS NULL)::int * count AS unpriced"
    " FROM jobs WHERE guild_id = $1 AND completed_at IS NOT NULL AND completed_at >= $2::timestamptz"
)
_FOLDED = (
    "SELECT day, nullif(user_id, 0) AS user_id, images, cost_nanousd AS nanos, estimated, unpriced"
    " FROM usage_totals WHERE guild_id = $1 AND day > ($2::timestamptz AT TIME ZONE 'UTC')::date"
)
_BOTH = f"{_LIVE} UNION ALL {_FOLDED}"
_SUMS = "sum(images)::bigint AS made, sum(nanos)::bigint AS spent, sum(estimated)::bigint, sum(unpriced)::bigint"
_PER_DAY_SQL = f"SELECT day, {_SUMS} FROM ({_BOTH}) AS used GROUP BY day ORDER BY day"  # noqa: S608 - constants
_PER_MEMBER_SQL = (
    f"SELECT user_id, {_SUMS} FROM ({_BOTH}) AS used WHERE user_id IS NOT NULL"  # noqa: S608 - constants
    " GROUP BY user_id ORDER BY made DESC, spent DESC, user_id LIMIT $3"
)


# The operator's budget (storage/spend.py has SQLite's, with the same rules): every job that may be billed counts
# from the moment it is written; pruned jobs count through their per-day totals.
_BILLABLE = "state <> 'cancelled' AND NOT (state = 'failed' AND request_id IS NULL)"
_SPEND_SQL = (
    "SELECT coalesce(sum(count) FILTER (WHERE created_at >= $1), 0)::bigint,"  # noqa: S608
    " coalesce(sum(cost_usd) FILTER (WHERE created_at >= $1), 0),"
    " coalesce(sum(count) FILTER (WHERE created_at >= $1 AND cost_usd IS NULL), 0)::bigint,"
    " coalesce(sum(count), 0)::bigint, coalesce(sum(cost_usd), 0),"
    " coalesce(sum(count) FILTER (WHERE cost_usd IS NULL), 0)::bigint"
    f" FROM jobs WHERE created_at >= $2 AND {_BILLABLE}"
)
_FOLDED_SPEND_SQL = (
    "SELECT coalesce(sum(images) FILTER (WHERE day >= ($1 AT TIME ZONE 'UTC')::date), 0)::bigint,"
    " coalesce(sum(cost_nanousd) FILTER (WHERE day >= ($1 AT TIME ZONE 'UTC')::date), 0)::bigint,"
    " coalesce(sum(images), 0)::bigint, coalesce(sum(cost_nanousd), 0)::bigint"
    " FROM usage_totals WHERE day >= ($2 AT TIME ZONE 'UTC')::date"
)


async def spend(pool: Pool, *, day: datetime, month: datetime) -> tuple[Spend, Spend]:
    """The whole bot's spend since `day` and since `month` (UTC midnights): (today, this month)."""
    live = await pool.fetchrow(_SPEND_SQL, day, month)
    folded = await pool.fetchrow(_FOLDED_SPEND_SQL, day, month)
    if live is None or folded is None:
        raise RuntimeError("an aggregate without GROUP BY returned no row")
    day_images, day_cost, day_unpriced, month_images, month_cost, month_unpriced = live
    folded_day_images, folded_day_nanos, folded_month_images, folded_month_nanos = folded
    return (
        Spend(day_images + folded_day_images, float(day_cost) + folded_day_nanos / NANO, day_unpriced),
        Spend(month_images + folded_month_images, float(month_cost) + folded_month_nanos / NANO, month_unpriced),
    )


async def guild_load(pool: Pool, guild_id: int, user_id: int) -> GuildLoad:
    """The member's jobs holding a slot and waiting, then the server's (count() is never NULL, unlike SUM)."""
    row = await pool.fetchrow(_GUILD_LOAD_SQL, guild_id, user_id)
    if row is None:
        raise RuntimeError("an aggregate without GROUP BY returned no row")
    mine_active, mine_waiting, active, waiting = row
    return GuildLoad(mine_active=mine_active, mine_waiting=mine_waiting, active=active, waiting=waiting)


async def usage(pool: Pool, guild_id: int, since: datetime, *, top: int) -> Usage:
    """Images a server made (reached `completed`) since `since`, per UTC day and for its `top` members,
    from live rows and from the totals of pruned ones."""
    days = await pool.fetch(_PER_DAY_SQL, guild_id, since)
    members = await pool.fetch(_PER_MEMBER_SQL, guild_id, since, top)
    return Usage(
        days=tuple(
            UsageDay(day.isoformat(), images, nanos / NANO, estimated, unpriced)
            for day, images, nanos, estimated, unpriced in days
        ),
        members=tuple(
            MemberUsage(user_id, images, nanos / NANO, estimated, unpriced)
            for user_id, images, nanos, estimated, unpriced in members
        ),
    )


async def prune(pool: Pool, *, before: datetime, batch: int = PRUNE_BATCH) -> int:
    """Delete jobs in a final state that finished (or, lacking that, were created) before `before`, then the
    input images no job names any more.

    Returns how many jobs were deleted. Each batch is one autocommitted statement
    (its usage folded by the trigger) and the event loop runs between batches,
    so a large first prune never holds rows or a connection for long. Rerolls
    of a deleted job keep working: their `parent_id` becomes NULL, and the input
    image they share stays as long as one of them names it.
    """
    total = await _in_batches(pool, _PRUNE_SQL, before, batch)
    images = await prune_inputs(pool, before=before)
    if total or images:
        log.info("pruned %d finished job(s) and %d input image(s) older than %s; usage is kept", total, images, before)
    return total


async def prune_inputs(pool: Pool, *, before: datetime) -> int:
    """Delete the input images created before `before` that no job names; how many went."""
    return await _in_batches(pool, _PRUNE_IMAGES_SQL, before, IMAGE_BATCH)


async def _in_batches(pool: Pool, sql: str, before: datetime, batch: int) -> int:
    """Run a `DELETE ... LIMIT batch RETURNING` until a batch comes back short; how many rows went."""
    total = 0
    while True:
        deleted = len(await pool.fetch(sql, before, batch))
        total += deleted
        if deleted < batch:
            return total
        await asyncio.sleep(0)


async def count_unfinished_by_state(pool: Pool) -> dict[JobState, int]:
    """How many jobs are in each non-final state (zeros included), read from a partial index of live jobs."""
    counts = {state: 0 for state in JobState if not state.is_final}
    for state, count in await pool.fetch(UNFINISHED_COUNT_SQL):
        counts[JobState(state)] = count
    return counts
