"""What the whole bot has spent since the start of the UTC day and month: the operator's budget reads it.

One aggregate over the jobs created since the month began (index
`jobs_created`, migration 0006), split by day with conditional sums, plus the
per-day totals of jobs already pruned (migration 0005). A job counts once it is
written: waiting and running jobs are about to be billed, so a budget that
counted only finished images could be overrun by a burst. Jobs that cannot
have been billed do not count: cancelled ones, and failed ones that RunComfy
never accepted (no request id). Images are counted, not jobs: a job asked for
`count` of them.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import aiosqlite

from storage.models import Spend
from storage.sqlite_common import to_text, unavailable_on_error

_BILLABLE = "state != 'cancelled' AND NOT (state = 'failed' AND request_id IS NULL)"
SPEND_SQL = (
    "SELECT"  # noqa: S608 - constants only
    " total((created_at >= :day) * count), total(CASE WHEN created_at >= :day THEN cost_usd END),"
    " total((created_at >= :day AND cost_usd IS NULL) * count),"
    " total(count), total(cost_usd), total((cost_usd IS NULL) * count)"
    f" FROM jobs WHERE created_at >= :month AND {_BILLABLE}"
)
# Pruned jobs, whose rows are gone: their per-day totals (kept for usage reports) still count this month.
FOLDED_SQL = (
    "SELECT total(CASE WHEN day >= substr(:day, 1, 10) THEN images END),"
    " total(CASE WHEN day >= substr(:day, 1, 10) THEN cost_nanousd END) / 1e9,"
    " total(images), total(cost_nanousd) / 1e9"
    " FROM usage_totals WHERE day >= substr(:month, 1, 10)"
)


async def spend(db: aiosqlite.Connection, path: Path, *, day: datetime, month: datetime) -> tuple[Spend, Spend]:
    """The whole bot's spend since `day` and since `month` (UTC midnights): (today, this month)."""
    params = {"day": to_text(day, "day"), "month": to_text(month, "month")}
    with unavailable_on_error(path):
        [live] = list(await db.execute_fetchall(SPEND_SQL, params))
        [folded] = list(await db.execute_fetchall(FOLDED_SQL, params))
    day_images, day_cost, day_unpriced, month_images, month_cost, month_unpriced = (float(v or 0) for v in live)
    folded_day_images, folded_day_cost, folded_month_images, folded_month_cost = (float(v or 0) for v in folded)
    return (
        Spend(int(day_images + folded_day_images), day_cost + folded_day_cost, int(day_unpriced)),
        Spend(int(month_images + folded_month_images), month_cost + folded_month_cost, int(month_unpriced)),
    )
