"""The process registry on a real PostgreSQL: overlaps refused in one sentence, stale entries ignored, races.

Each "process" is a pool of its own, as each bot process would have.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from storage.postgres.connect import create_pool
from storage.postgres.registry import ProcessRegistry, ShardsTakenError

pytestmark = pytest.mark.postgres

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
async def pools(postgres_url: str) -> AsyncIterator[list[asyncpg.Pool]]:
    """Eight separate pools on one fresh database: eight processes' worth of connections."""
    made = [await create_pool(postgres_url, min_size=1, max_size=2) for _ in range(8)]
    try:
        yield made
    finally:
        for pool in made:
            await pool.close()


async def register(
    registry: ProcessRegistry, name: str, shards: tuple[int, ...], *, count: int = 4, now: float = 0
) -> None:
    await registry.register(name, host=f"{name}-host", pid=100, shard_count=count, shard_ids=shards, now=at(now))


async def test_register_heartbeat_and_deregister(pools: list[asyncpg.Pool]) -> None:
    registry = ProcessRegistry(pools[0], lease=LEASE)
    me = await registry.register("a", host="box-1", pid=42, shard_count=4, shard_ids=(1, 0), now=at(0))
    assert (me.process_id, me.host, me.pid, me.shard_count, me.shard_ids) == ("a", "box-1", 42, 4, (0, 1))
    assert (me.started_at, me.heartbeat_at) == (at(0), at(0))
    assert await registry.heartbeat("a", now=at(30))
    [live] = await registry.live(now=at(80))
    assert live.heartbeat_at == at(30)
    assert await registry.live(now=at(91)) == [], "past the lease a silent process is not live"
    assert await registry.deregister("a")
    assert not await registry.deregister("a")
    assert not await registry.heartbeat("a", now=at(95)), "a deregistered process has no row to renew"


async def test_an_overlapping_range_is_refused_in_one_sentence(pools: list[asyncpg.Pool]) -> None:
    first, second = ProcessRegistry(pools[0], lease=LEASE), ProcessRegistry(pools[1], lease=LEASE)
    await register(first, "a", (0, 1, 2, 3), count=8)
    with pytest.raises(ShardsTakenError) as caught:
        await register(second, "b", (2, 3, 4), count=8, now=5)
    assert str(caught.value) == (
        "shards 2,3 are already run by process a on host a-host (pid 100) since 2025-03-01 12:00:00 UTC;"
        " give each process its own SHARD_IDS"
    )
    assert caught.value.holder.process_id == "a"
    with pytest.raises(ShardsTakenError, match=r"^shard 0 is already run by process a"):
        await register(second, "b", (0,), count=8, now=5)
    await register(second, "b", (4, 5, 6, 7), count=8, now=5)  # disjoint: fine
    assert [p.process_id for p in await first.live(now=at(6))] == ["a", "b"]


async def test_a_different_shard_count_is_refused(pools: list[asyncpg.Pool]) -> None:
    registry = ProcessRegistry(pools[0], lease=LEASE)
    await register(registry, "a", (0, 1), count=4)
    with pytest.raises(ShardsTakenError) as caught:
        await register(registry, "b", (5,), count=8)
    assert str(caught.value) == (
        "SHARD_COUNT 8 differs from the 4 that process a on host a-host (pid 100) has run with"
        " since 2025-03-01 12:00:00 UTC; give every process the same SHARD_COUNT"
    )


async def test_two_unsharded_processes_refuse_each_other(pools: list[asyncpg.Pool]) -> None:
    registry = ProcessRegistry(pools[0], lease=LEASE)
    await register(registry, "a", (0,), count=1)
    with pytest.raises(ShardsTakenError, match="shard 0 is already run by process a"):
        await register(registry, "b", (0,), count=1)


async def test_a_stale_process_blocks_nobody_and_learns_it_lost_its_shards(pools: list[asyncpg.Pool]) -> None:
    old, new = ProcessRegistry(pools[0], lease=LEASE), ProcessRegistry(pools[1], lease=LEASE)
    await register(old, "old", (0, 1))
    await old.heartbeat("old", now=at(10))
    with pytest.raises(ShardsTakenError):
        await register(new, "new", (1,), now=70)  # 60 s after its heartbeat: still live
    await register(new, "new", (1,), now=71)  # 61 s: stale
    assert not await old.heartbeat("old", now=at(72)), "its row was removed: it must stop running shard 1"
    assert [p.process_id for p in await new.live(now=at(72))] == ["new"]


async def test_registering_again_under_the_same_id_replaces_the_row(pools: list[asyncpg.Pool]) -> None:
    registry = ProcessRegistry(pools[0], lease=LEASE)
    await register(registry, "a", (0, 1))
    await register(registry, "a", (2, 3), now=5)
    [me] = await registry.live(now=at(6))
    assert (me.shard_ids, me.started_at) == ((2, 3), at(5))


async def test_nonsense_shards_are_refused_before_the_database_is_asked(pools: list[asyncpg.Pool]) -> None:
    registry = ProcessRegistry(pools[0], lease=LEASE)
    for count, shards, message in (
        (4, (), "at least one shard"),
        (4, (1, 1), "repeat"),
        (4, (4,), "outside 0..3"),
        (0, (0,), "at least 1"),
    ):
        with pytest.raises(ValueError, match=message):
            await register(registry, "a", shards, count=count)
    assert await registry.live(now=at(0)) == []


async def test_processes_racing_for_overlapping_ranges_never_share_a_shard(pools: list[asyncpg.Pool]) -> None:
    # Eight processes at once, each wanting two neighbouring shards of eight, round the ring:
    # every pair overlaps its neighbours, so at most every other one can win.
    registries = [ProcessRegistry(pool, lease=LEASE) for pool in pools]
    wanted = [(n, (n + 1) % 8) for n in range(8)]
    for attempt in range(5):
        results = await asyncio.gather(
            *(
                register(registry, f"p{attempt}-{n}", shards, count=8, now=attempt * 100)
                for n, (registry, shards) in enumerate(zip(registries, wanted, strict=True))
            ),
            return_exceptions=True,
        )
        assert all(result is None or isinstance(result, ShardsTakenError) for result in results), results
        live = await registries[0].live(now=at(attempt * 100))
        winners = {f"p{attempt}-{n}" for n, result in enumerate(results) if result is None}
        assert {p.process_id for p in live} == winners
        assert winners, "someone must win"
        for one, other in itertools.combinations(live, 2):
            assert not set(one.shard_ids) & set(other.shard_ids), (one, other)
        for process in live:
            assert await registries[0].deregister(process.process_id)
