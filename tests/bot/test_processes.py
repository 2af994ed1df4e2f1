"""A process joining the others on PostgreSQL: its shards registered, a crashed run replaced, a lost row noticed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bot.clock import Clock
from bot.processes import Membership, process_name
from bot.settings import Settings
from storage.postgres.jobs import PostgresJobStore
from storage.postgres.registry import ShardsTakenError

pytestmark = pytest.mark.postgres


def settings(shards: list[int], count: int = 4) -> Settings:
    return Settings(_env_file=None, shard_count=count, shard_ids=shards, lease_seconds=3)


@pytest.fixture
async def store(postgres_url: str) -> AsyncIterator[PostgresJobStore]:
    async with await PostgresJobStore.open(postgres_url, max_size=3) as opened:
        yield opened


def never() -> None:
    raise AssertionError("the registry row was not expected to be lost")


async def test_overlapping_shards_are_refused_in_one_sentence(
    store: PostgresJobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await Membership.join(store, settings([0, 1]), clock=Clock(), on_lost=never)
    monkeypatch.setattr("socket.gethostname", lambda: "another-box")  # another machine: no waiting, refused
    with pytest.raises(ShardsTakenError) as refused:
        await Membership.join(store, settings([1, 2]), clock=Clock(), on_lost=never)
    sentence = str(refused.value)
    assert "shard 1 is already run by process" in sentence
    assert "give each process its own SHARD_IDS" in sentence
    assert sentence.count(".") <= 1
    second = await Membership.join(store, settings([2, 3]), clock=Clock(), on_lost=never)
    await first.leave()
    await second.leave()


async def test_a_restart_replaces_its_silent_previous_run_and_names_it(store: PostgresJobStore) -> None:
    crashed = await Membership.join(store, settings([0]), clock=Clock(), on_lost=never)
    assert crashed._task is not None
    crashed._task.cancel()  # killed: its heartbeat stops, its row stays
    restarted = await Membership.join(store, settings([0]), clock=Clock(), on_lost=never)
    assert restarted.predecessor == crashed.process_id
    assert [p.process_id for p in await restarted.registry.live(now=Clock().now())] == [restarted.process_id]
    await restarted.leave()


async def test_a_live_twin_on_the_same_host_is_refused(store: PostgresJobStore) -> None:
    running = await Membership.join(store, settings([0]), clock=Clock(), on_lost=never)
    beating = asyncio.create_task(_beat(running))
    try:
        with pytest.raises(ShardsTakenError):
            await Membership.join(store, settings([0]), clock=Clock(), on_lost=never)
    finally:
        beating.cancel()
        await running.leave()


async def _beat(membership: Membership) -> None:
    while True:
        await membership.registry.heartbeat(membership.process_id, now=Clock().now())
        await asyncio.sleep(0.2)


async def test_a_process_whose_row_was_taken_is_told_to_stop(store: PostgresJobStore) -> None:
    lost = asyncio.Event()
    member = await Membership.join(store, settings([0]), clock=Clock(), on_lost=lost.set)
    await member.registry.deregister(member.process_id)  # another process removed it as stale
    await asyncio.wait_for(lost.wait(), 3)
    await member.leave()


def test_process_names_are_unique_per_run() -> None:
    assert process_name("box", 7) != process_name("box", 7)
    assert process_name("box", 7).startswith("box-7-")
