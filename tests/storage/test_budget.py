"""The shared request budget on a real PostgreSQL: separate pools racing for one token bucket.

Each pool stands for one bot process. What is asserted is the bucket's own
bookkeeping (every token a caller got is counted, and the count never exceeds
a full bucket plus the rate times the database's elapsed time), never how
fast anything ran; the achieved rate is printed for the record (`-s`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import asyncpg
import pytest

from storage.postgres.budget import SharedRequestBudget
from storage.postgres.connect import create_pool

pytestmark = pytest.mark.postgres

EPSILON = 1e-6  # float arithmetic in the database


@pytest.fixture
async def pools(postgres_url: str) -> AsyncIterator[list[asyncpg.Pool]]:
    """Three separate pools on one fresh database: three processes."""
    made = [await create_pool(postgres_url, min_size=1, max_size=4) for _ in range(3)]
    try:
        yield made
    finally:
        for pool in made:
            await pool.close()


async def test_racing_pools_get_exactly_what_the_bucket_holds(pools: list[asyncpg.Pool]) -> None:
    # A rate so low that nothing refills during the test: the 10 tokens of a full bucket are all there is.
    budgets = [await SharedRequestBudget.open(pool, rate=0.0001, capacity=10, name="race") for pool in pools]
    waits = await asyncio.gather(*(budget.try_acquire() for budget in budgets for _ in range(15)))
    assert sum(wait == 0 for wait in waits) == 10
    assert all(wait > 1000 for wait in waits if wait), "a refusal says how long until the next token"
    state = await budgets[0].state()
    assert state.granted == 10
    assert 0 <= state.tokens < 1


async def test_a_refused_take_waits_for_the_next_token(pools: list[asyncpg.Pool]) -> None:
    budget = await SharedRequestBudget.open(pools[0], rate=2, capacity=1, name="single")
    assert await budget.try_acquire() == 0
    wait = await budget.try_acquire()
    assert 0 < wait <= 0.5, "one token at 2 per second is at most half a second away"
    await budget.acquire()  # waits, then gets it
    assert (await budget.state()).granted == 2


async def test_a_process_waiters_ask_the_database_one_at_a_time_first_come_first_served(
    pools: list[asyncpg.Pool], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Hundreds of waiting requests each asking the database whenever a token was due held every connection of
    # the pool, and a new /imagine's writes waited past Discord's 3 s (bench/scale.py --processes 3).
    budget = await SharedRequestBudget.open(pools[0], rate=50, capacity=1, name="turns")
    asking, most_asking = 0, 0
    ask = budget.try_acquire

    async def counted(amount: float = 1) -> float:
        nonlocal asking, most_asking
        asking += 1
        most_asking = max(most_asking, asking)
        try:
            return await ask(amount)
        finally:
            asking -= 1

    monkeypatch.setattr(budget, "try_acquire", counted)
    served: list[int] = []

    async def request(number: int) -> None:
        await budget.acquire()
        served.append(number)

    await asyncio.gather(*(request(number) for number in range(20)))
    assert most_asking == 1
    assert served == list(range(20))
    assert (await budget.state()).granted == 20


async def test_three_pools_hammering_stay_within_the_rate(pools: list[asyncpg.Pool]) -> None:
    rate, capacity, seconds = 40.0, 5.0, 2.0
    budgets = [await SharedRequestBudget.open(pool, rate=rate, capacity=capacity, name="hammer") for pool in pools]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    counts = [0] * len(budgets)

    async def hammer(index: int) -> None:
        while loop.time() < deadline:
            await budgets[index].acquire()
            counts[index] += 1

    await asyncio.gather(*(hammer(index) for index in range(len(budgets)) for _ in range(4)))
    state = await budgets[0].state()
    elapsed = (state.refilled_at - state.created_at).total_seconds()
    assert sum(counts) == state.granted, "every token a process got is in the books, and no other"
    assert state.granted <= state.most_ever_allowed + EPSILON
    assert all(counts), "every process got some"
    achieved = (state.granted - capacity) / elapsed
    print(  # noqa: T201 - the figure the docs quote
        f"\nshared budget: {rate:g}/s configured (burst {capacity:g}), {achieved:.2f}/s achieved over {elapsed:.2f} s"
        f" by {len(budgets)} pools ({counts}); ceiling {state.most_ever_allowed:.1f}, granted {state.granted:g}"
    )


async def test_the_newest_settings_apply_to_every_process(
    pools: list[asyncpg.Pool], caplog: pytest.LogCaptureFixture
) -> None:
    first = await SharedRequestBudget.open(pools[0], rate=5, name="settings")
    assert (first.capacity, (await first.state()).tokens) == (5, 5)
    caplog.set_level(logging.WARNING)
    await SharedRequestBudget.open(pools[1], rate=10, capacity=3, name="settings")
    state = await first.state()
    assert (state.rate, state.capacity, state.tokens) == (10, 3, 3)
    assert "changed from 5/s (burst 5) to 10/s (burst 3)" in caplog.text


async def test_nonsense_is_refused(pools: list[asyncpg.Pool]) -> None:
    with pytest.raises(ValueError, match="rate must be positive"):
        await SharedRequestBudget.open(pools[0], rate=0)
    with pytest.raises(ValueError, match="capacity must be at least 1"):
        await SharedRequestBudget.open(pools[0], rate=1, capacity=0.5)
    budget = await SharedRequestBudget.open(pools[0], rate=1, capacity=2)
    for amount in (0, 3):
        with pytest.raises(ValueError, match="amount must be in"):
            await budget.try_acquire(amount)
    unopened = SharedRequestBudget(pools[0], "never-opened", capacity=1)
    with pytest.raises(LookupError, match="no row"):
        await unopened.try_acquire()
