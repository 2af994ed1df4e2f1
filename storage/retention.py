"""Retention: delete old finished jobs without losing what they count for, and cheap counts of live jobs.

A public bot makes thousands of images a month, each a row with a prompt in
it. Rows in a final state (delivered, failed, cancelled) older than
JOB_RETENTION_DAYS are deleted by `prune`, a few hundred per statement so the
bot's own writes slot in between batches. Their usage is not lost: the
`jobs_fold_usage` trigger (migration 0005) adds every deleted row that reached
`completed` to `usage_totals`, one row per (server, member, UTC day), inside
the same DELETE statement. `usage` then reads totals and live rows together,
so `/imagine-admin usage` says the same before and after a prune.

Totals keep no time of day. A report starting mid-day (`since` = now − N days)
counts folded totals only for the days after `since`'s day; with the defaults
(retention 90 days, reports of at most 90 days) every pruned row is older than
any report's start, so reports are exact. With a shorter retention, a report
reaching further back misses the folded part of its first day only.

`count_unfinished_by_state` reads only the rows of a partial index of live
jobs (`jobs_unfinished` or `jobs_guild_unfinished`, the planner's choice), for
health and metrics, which ask often and must not scan a table that keeps 90
days of history.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import aiosqlite

from storage.columns import FINAL_LIST, UNFINISHED_WHERE
from storage.models import JobState, MemberUsage, Usage, UsageDay
from storage.sqlite_common import to_text, unavailable_on_error

log = logging.getLogger(__name__)

PRUNE_BATCH = 500
NANO = 1_000_000_000

# FINAL_LIST and UNFINISHED_WHERE (storage/columns.py) are word for word the WHERE of the partial indexes.
_PRUNE_SQL = (
    "DELETE FROM jobs WHERE id IN ("  # noqa: S608 - constants only
    f"SELECT id FROM jobs WHERE state IN ({FINAL_LIST}) AND coalesce(finished_at, created_at) < :before"
    " ORDER BY id LIMIT :batch) RETURNING id"
)
# Input images no job names any more (rerolls share their source's: one may outlive the job that brought it).
# `created_at < before` spares an image whose job is being written (storage/sqlite.py writes the image first).
_PRUNE_IMAGES_SQL = (
    "DELETE FROM input_images WHERE id IN (SELECT id FROM input_images WHERE created_at < :before"
    " AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.input_image_id = input_images.id) LIMIT :batch) RETURNING id"
)
IMAGE_BATCH = 20  # an image may be several MB: fewer of them per statement
UNFINISHED_COUNT_SQL = f"SELECT state, count(*) FROM jobs WHERE {UNFINISHED_WHERE} GROUP BY state"  # noqa: S608

# Live rows, summed exactly as the trigger folds them (whole billionths of a dollar per job).
_LIVE = (
    "SELECT substr(completed_at, 1, 10) AS day, user_id, count AS images,"
    " CAST(round(coalesce(cost_usd, 0) * 1e9) AS INTEGER) AS nanos,"
    " (cost_estimated AND cost_usd IS NOT NULL) * count AS estimated, (cost_usd IS NULL) * count AS unpriced"
    " FROM jobs WHERE guild_id = :guild AND completed_at IS NOT NULL AND completed_at >= :since"
)
_FOLDED = (
    "SELECT day, nullif(user_id, 0) AS user_id, images, cost_nanousd AS nanos, estimated, unpriced"
    " FROM usage_totals WHERE guild_id = :guild AND day > substr(:since, 1, 10)"
)
_BOTH = f"{_LIVE} UNION ALL {_FOLDED}"
_PER_DAY_SQL = (
    "SELECT day, sum(images), sum(nanos), sum(estimated), sum(unpriced)"  # noqa: S608 - constants only
    f" FROM ({_BOTH}) GROUP BY day ORDER BY day"
)
_PER_MEMBER_SQL = (
    "SELECT user_id, sum(images) AS made, sum(nanos) AS spent, sum(estimated), sum(unpriced)"  # noqa: S608
    f" FROM ({_BOTH}) WHERE user_id IS NOT NULL"
    " GROUP BY user_id ORDER BY made DESC, spent DESC, user_id LIMIT :top"
)


async def prune(db: aiosqlite.Connection, path: Path, *, before: datetime, batch: int = PRUNE_BATCH) -> int:
    """Delete jobs in a final state that finished (or, lacking that, were created) before `before`, then the
    input images no job names any more.

    Returns how many jobs were deleted. Each batch is one statement (committed
    on its own, its usage folded by the trigger), and the event loop runs
    between batches, so a large first prune never holds the database for long.
    Rerolls of a deleted job keep working: their `parent_id` becomes NULL, and
    the input image they share stays as long as one of them names it.
    """
    total = await _in_batches(db, path, _PRUNE_SQL, {"before": to_text(before, "before"), "batch": batch})
    images = await prune_inputs(db, path, before=before)
    if total or images:
        log.info("pruned %d finished job(s) and %d input image(s) older than %s; usage is kept", total, images, before)
    return total


async def prune_inputs(db: aiosqlite.Connection, path: Path, *, before: datetime) -> int:
    """Delete the input images created before `before` that no job names; how many went."""
    return await _in_batches(db, path, _PRUNE_IMAGES_SQL, {"before": to_text(before, "before"), "batch": IMAGE_BATCH})


async def _in_batches(db: aiosqlite.Connection, path: Path, sql: str, params: dict[str, Any]) -> int:
    """Run a `DELETE ... LIMIT :batch RETURNING` until a batch comes back short; how many rows went."""
    total = 0
    while True:
        with unavailable_on_error(path):
            deleted = len(list(await db.execute_fetchall(sql, params)))
        total += deleted
        if deleted < params["batch"]:
            return total
        await asyncio.sleep(0)


async def usage(db: aiosqlite.Connection, path: Path, guild_id: int, since: datetime, *, top: int = 5) -> Usage:
    """Images a server made (reached `completed`) since `since`, per UTC day and for its `top` members,
    from live rows and from the totals of pruned ones."""
    params = {"guild": guild_id, "since": to_text(since, "since"), "top": top}
    with unavailable_on_error(path):
        days = await db.execute_fetchall(_PER_DAY_SQL, params)
        members = await db.execute_fetchall(_PER_MEMBER_SQL, params)
    return Usage(
        days=tuple(
            UsageDay(day, int(images), nanos / NANO, int(estimated), int(unpriced))
            for day, images, nanos, estimated, unpriced in days
        ),
        members=tuple(
            MemberUsage(int(user_id), int(images), nanos / NANO, int(estimated), int(unpriced))
            for user_id, images, nanos, estimated, unpriced in members
        ),
    )


async def count_unfinished_by_state(db: aiosqlite.Connection, path: Path) -> dict[JobState, int]:
    """How many jobs are in each non-final state (zeros included), read from the live-jobs index only."""
    with unavailable_on_error(path):
        rows = await db.execute_fetchall(UNFINISHED_COUNT_SQL)
    counts = {state: 0 for state in JobState if not state.is_final}
    for state, count in rows:
        counts[JobState(state)] = int(count)
    return counts
