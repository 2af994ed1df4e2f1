"""`SharedRequestBudget`: one RunComfy requests-per-second budget for every process, as a token bucket row.

Each process's own limiter (aiolimiter) keeps that process under the rate;
N processes would together make N times as many requests. Here the bucket is
one row in PostgreSQL and taking a token is one statement: it locks the row
(`SELECT ... FOR UPDATE` in a CTE, so a second taker waits and then reads the
first's result, never the value from before it), refills it for the time
passed since the last take, and takes the token if there is one. No process
can spend what another already spent, and no clock but the database's is read.

The time is the statement's start (`statement_timestamp()`). A taker that had
to wait for the row lock started before the previous taker's refill; its
elapsed time is clamped at zero and the refill time never moves backwards, so
a wait neither creates tokens nor loses them: the time is credited to the next
taker. Tokens are floats, so fractional rates work.

`granted` counts every token handed out since the row was created; with
`created_at` and `refilled_at` it is the bookkeeping that proves the budget
was kept: granted <= capacity + rate * (refilled_at - created_at).

`acquire()` matches `aiolimiter.AsyncLimiter.acquire()`, so the RunComfy client
can take either. Each call is one round trip to the database; a refused one
sleeps until a token should be there (plus a little jitter, so processes that
were refused together do not all come back at the same instant). Within a
process the callers of `acquire()` take turns (an asyncio lock, first come
first served, as aiolimiter queues its waiters): only one of them asks the
database at a time. Without that, each of the hundreds of requests a busy
process has waiting came back every time a token was due, all queueing on the
row's lock and holding the pool's connections, so the writes of a new
/imagine waited behind them past Discord's 3 s (bench/scale.py --processes 3:
288 of 1,000 commands failed).
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from storage.postgres.connect import Pool

log = logging.getLogger(__name__)

_TAKE_SQL = """
WITH current AS (
    SELECT name,
           LEAST(capacity, tokens + rate * GREATEST(0, EXTRACT(EPOCH FROM statement_timestamp() - refilled_at)::float8))
               AS available
    FROM request_budget WHERE name = $1 FOR UPDATE
), decided AS (
    SELECT name, available, CASE WHEN available >= $2 THEN $2::float8 ELSE 0 END AS taken FROM current
)
UPDATE request_budget AS b
SET tokens = d.available - d.taken,
    granted = b.granted + d.taken,
    refilled_at = GREATEST(b.refilled_at, statement_timestamp())
FROM decided AS d
WHERE b.name = d.name
RETURNING d.taken, b.tokens, b.rate
"""
# A new bucket starts full (as aiolimiter's does). A process started with other
# settings changes them for everyone: the newest configuration wins.
_UPSERT_SQL = """
INSERT INTO request_budget AS b (name, rate, capacity, tokens, refilled_at, granted, created_at)
VALUES ($1, $2, $3, $3, statement_timestamp(), 0, statement_timestamp())
ON CONFLICT (name) DO UPDATE SET rate = EXCLUDED.rate, capacity = EXCLUDED.capacity,
    tokens = LEAST(b.tokens, EXCLUDED.capacity)
"""
_SETTINGS_SQL = "SELECT rate, capacity FROM request_budget WHERE name = $1"
_STATE_SQL = "SELECT rate, capacity, tokens, granted, refilled_at, created_at FROM request_budget WHERE name = $1"
_SHORTEST_SLEEP = 0.001
_JITTER = 0.1  # up to 10% more than the computed wait


@dataclass(frozen=True, slots=True)
class BudgetState:
    """The bucket's row: its settings, what is left, and everything it ever handed out."""

    rate: float
    capacity: float
    tokens: float
    granted: float
    refilled_at: datetime
    created_at: datetime

    @property
    def most_ever_allowed(self) -> float:
        """What the bucket may have handed out by `refilled_at`: a full bucket plus the rate since creation."""
        return self.capacity + self.rate * (self.refilled_at - self.created_at).total_seconds()


class SharedRequestBudget:
    """A token bucket shared through PostgreSQL; `await budget.acquire()` before each request."""

    def __init__(self, pool: Pool, name: str, *, capacity: float) -> None:
        """Use `open()`: it creates the row (or brings its settings up to date)."""
        self._pool = pool
        self.name = name
        self.capacity = capacity
        self._turn = asyncio.Lock()  # one acquire() of this process at the database at a time

    @classmethod
    async def open(
        cls, pool: Pool, *, rate: float, capacity: float | None = None, name: str = "runcomfy"
    ) -> SharedRequestBudget:
        """The budget `name` at `rate` tokens per second holding at most `capacity` (default: one second's worth)."""
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        capacity = max(1.0, rate) if capacity is None else capacity
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        async with pool.acquire() as conn, conn.transaction():
            before = await conn.fetchrow(_SETTINGS_SQL, name)
            await conn.execute(_UPSERT_SQL, name, float(rate), float(capacity))
        if before is not None and (before["rate"], before["capacity"]) != (rate, capacity):
            log.warning(
                "request budget %r changed from %g/s (burst %g) to %g/s (burst %g) for every process",
                name,
                before["rate"],
                before["capacity"],
                rate,
                capacity,
            )
        return cls(pool, name, capacity=capacity)

    async def try_acquire(self, amount: float = 1) -> float:
        """Take `amount` tokens if they are there: 0.0 when taken, else the seconds until they should be."""
        if not 0 < amount <= self.capacity:
            raise ValueError(f"amount must be in (0, {self.capacity:g}], got {amount}")
        row = await self._pool.fetchrow(_TAKE_SQL, self.name, float(amount))
        if row is None:
            raise LookupError(f"request budget {self.name!r} has no row; open() creates it")
        taken, tokens, rate = row
        if taken:
            return 0.0
        return max(float(amount - tokens) / float(rate), _SHORTEST_SLEEP)

    async def acquire(self, amount: float = 1) -> None:
        """Wait until `amount` tokens are taken (the `aiolimiter.AsyncLimiter.acquire()` interface), after this
        process's earlier callers."""
        async with self._turn:
            while True:
                wait = await self.try_acquire(amount)
                if not wait:
                    return
                await asyncio.sleep(wait * (1 + _JITTER * random.random()))  # noqa: S311 - jitter, not a secret

    async def state(self) -> BudgetState:
        """The bucket's row as it is now (tokens as of the last take, not refilled)."""
        row = await self._pool.fetchrow(_STATE_SQL, self.name)
        if row is None:
            raise LookupError(f"request budget {self.name!r} has no row; open() creates it")
        return BudgetState(**dict(row))
