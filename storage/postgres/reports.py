"""The community-server aggregates over the jobs table, for `PostgresJobStore`: admission counts and usage.

Each is one statement that counts in the database instead of loading rows:
admission runs before Discord's 3 s acknowledgement, and a usage report may
cover thousands of images. The numbers match the SQLite store's (`total()`
there is `coalesce(sum(), 0)` here; booleans are counted with FILTER).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from storage.columns import ACTIVE_LIST, UNFINISHED_WHERE
from storage.models import GuildLoad, MemberUsage, Usage, UsageDay

if TYPE_CHECKING:
    from storage.postgres.connect import Pool

_GUILD_LOAD_SQL = (
    f"SELECT count(*) FILTER (WHERE user_id = $2 AND state IN ({ACTIVE_LIST})),"  # noqa: S608 - constant clauses
    " count(*) FILTER (WHERE user_id = $2 AND state = 'waiting'),"
    f" count(*) FILTER (WHERE state IN ({ACTIVE_LIST})),"
    " count(*) FILTER (WHERE state = 'waiting')"
    f" FROM jobs WHERE guild_id = $1 AND {UNFINISHED_WHERE}"
)
_COMPLETED_SINCE = "WHERE guild_id = $1 AND completed_at IS NOT NULL AND completed_at >= $2"
_PRICED = (
    "coalesce(sum(cost_usd), 0),"
    " count(*) FILTER (WHERE cost_estimated AND cost_usd IS NOT NULL),"
    " count(*) FILTER (WHERE cost_usd IS NULL)"
)
# Days are UTC days whatever the session's time zone.
_PER_DAY_SQL = (
    "SELECT to_char(completed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, count(*),"  # noqa: S608 - constants
    f" {_PRICED} FROM jobs {_COMPLETED_SINCE} GROUP BY day ORDER BY day"
)
_PER_MEMBER_SQL = (
    "SELECT user_id, count(*) AS images, coalesce(sum(cost_usd), 0) AS spent,"  # noqa: S608 - constants
    " count(*) FILTER (WHERE cost_estimated AND cost_usd IS NOT NULL), count(*) FILTER (WHERE cost_usd IS NULL)"
    f" FROM jobs {_COMPLETED_SINCE} AND user_id IS NOT NULL"
    " GROUP BY user_id ORDER BY images DESC, spent DESC, user_id LIMIT $3"
)


async def guild_load(pool: Pool, guild_id: int, user_id: int) -> GuildLoad:
    """The member's jobs holding a slot and waiting, then the server's (count() is never NULL, unlike SUM)."""
    row = await pool.fetchrow(_GUILD_LOAD_SQL, guild_id, user_id)
    if row is None:
        raise RuntimeError("an aggregate without GROUP BY returned no row")
    mine_active, mine_waiting, active, waiting = row
    return GuildLoad(mine_active=mine_active, mine_waiting=mine_waiting, active=active, waiting=waiting)


async def usage(pool: Pool, guild_id: int, since: datetime, *, top: int) -> Usage:
    """Images a server made (reached `completed`) since `since`, per UTC day, and its `top` members."""
    days = await pool.fetch(_PER_DAY_SQL, guild_id, since)
    members = await pool.fetch(_PER_MEMBER_SQL, guild_id, since, top)
    return Usage(
        days=tuple(UsageDay(day, count, cost, estimated, unpriced) for day, count, cost, estimated, unpriced in days),
        members=tuple(
            MemberUsage(user_id, count, cost, estimated, unpriced)
            for user_id, count, cost, estimated, unpriced in members
        ),
    )
