"""Leases on jobs in PostgreSQL: claims split between racing processes, renewals, release, adoption, notices.

Several stores (each its own pool and control connection, as several processes
would have) on one real database.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import pytest

from storage.models import JobOrigin, JobState, Lease
from storage.postgres.jobs import PostgresJobStore
from tests.storage.test_job_store import ANY, ORIGIN, at, new_job

pytestmark = pytest.mark.postgres

LIVE = JobState.IN_QUEUE


@pytest.fixture
async def stores(postgres_url: str) -> AsyncIterator[list[PostgresJobStore]]:
    opened = [await PostgresJobStore.open(postgres_url, max_size=3) for _ in range(3)]
    try:
        yield opened
    finally:
        for store in opened:
            await store.close()


async def test_racing_processes_split_the_orphans_and_claim_each_once(stores: list[PostgresJobStore]) -> None:
    jobs = [await stores[0].create(new_job(str(n), origin=ORIGIN), now=at(0)) for n in range(30)]
    ids = [job.id for job in jobs]
    claims = await asyncio.gather(
        *(store.leases.claim(ids, f"p{index}", until=at(60), now=at(1)) for index, store in enumerate(stores))
    )
    claimed = [job.id for batch in claims for job in batch]
    assert sorted(claimed) == sorted(ids), "every job claimed exactly once"
    for index, batch in enumerate(claims):
        assert all(job.lease_owner == f"p{index}" and job.lease_until == at(60) for job in batch)
    assert await stores[0].leases.claim(ids, "late", until=at(90), now=at(2)) == [], "all held"


async def test_a_lease_that_ran_out_is_taken_over_and_the_old_holder_can_change_nothing(
    stores: list[PostgresJobStore],
) -> None:
    first, second = stores[0], stores[1]
    job = await first.create(new_job(origin=ORIGIN), now=at(0), state=JobState.WAITING, lease=Lease("a", at(30)))
    assert await second.leases.claim([job.id], "b", until=at(60), now=at(29)) == [], "not yet run out"
    assert await second.leases.orphans("b", now=at(29), limit=10) == []
    assert [o.id for o in await second.leases.orphans("b", now=at(31), limit=10)] == [job.id]
    [taken] = await second.leases.claim([job.id], "b", until=at(60), now=at(31))
    assert taken.lease_owner == "b"
    moved = await first.transition(job.id, JobState.SUBMITTING, expect=JobState.WAITING, now=at(32), owner="a")
    assert moved is None, "the process that lost the lease changes nothing"
    assert await first.leases.renew("a", until=at(90)) == 0
    assert await second.leases.renew("b", until=at(90)) == 1
    held = await first.get(job.id)
    assert held is not None
    assert (held.state, held.lease_owner, held.lease_until) == (JobState.WAITING, "b", at(90))


async def test_renewal_and_orphans_cover_live_jobs_and_owed_deliveries_only(stores: list[PostgresJobStore]) -> None:
    store = stores[0]
    lease = Lease("a", at(30))
    live = await store.create(new_job("live", origin=ORIGIN), now=at(0), lease=lease)
    owing = await store.create(new_job("owing", origin=ORIGIN), now=at(0), lease=lease)
    done = await store.create(new_job("done", origin=ORIGIN), now=at(0), lease=lease)
    cli = await store.create(new_job("cli", origin=JobOrigin()), now=at(0), lease=lease)
    await store.transition(owing.id, JobState.FAILED, expect=ANY, now=at(1), deliver_at=at(1))
    await store.transition(done.id, JobState.DELIVERED, expect=ANY, now=at(1))
    assert await store.leases.renew("a", until=at(60)) == 3  # not the delivered one
    orphans = await store.leases.orphans("b", now=at(61), limit=10)
    assert [job.id for job in orphans] == [live.id, owing.id], "the command line's job is not the bot's to take"
    assert await store.leases.orphans("a", now=at(61), limit=10) == [], "a late renewal: still its own jobs"
    assert await store.leases.next_expiry("b") == at(60)
    assert await store.leases.next_expiry("a") is None, "its own leases are not waited for"
    assert cli.origin.channel_id is None


async def test_a_released_lease_is_free_at_once(stores: list[PostgresJobStore]) -> None:
    store = stores[0]
    job = await store.create(new_job(origin=ORIGIN), now=at(0), lease=Lease("a", at(30)))
    assert await store.leases.release("a") == 1
    assert await store.leases.next_expiry("b") is not None
    assert [o.id for o in await store.leases.orphans("b", now=at(1), limit=10)] == [job.id]
    [taken] = await stores[1].leases.claim([job.id], "b", until=at(60), now=at(1))
    assert taken.lease_owner == "b"


async def test_some_leases_can_be_given_up(stores: list[PostgresJobStore]) -> None:
    store = stores[0]
    jobs = [await store.create(new_job(str(n), origin=ORIGIN), now=at(0), lease=Lease("a", at(30))) for n in range(3)]
    assert await store.leases.release("a", job_ids=[jobs[1].id, jobs[2].id]) == 2
    assert await store.leases.release("b", job_ids=[jobs[0].id]) == 0, "only the holder gives a lease up"
    assert [o.id for o in await store.leases.orphans("b", now=at(1), limit=10)] == [jobs[1].id, jobs[2].id]


async def test_adopting_a_dead_predecessors_jobs_takes_them_whatever_their_lease(
    stores: list[PostgresJobStore],
) -> None:
    store = stores[0]
    mine = [await store.create(new_job(str(n), origin=ORIGIN), now=at(0), lease=Lease("old", at(30))) for n in range(2)]
    other = await store.create(new_job("other", origin=ORIGIN), now=at(0), lease=Lease("c", at(30)))
    adopted = await store.leases.adopt("old", "new", until=at(60))
    assert [job.id for job in adopted] == [job.id for job in mine]
    still = await store.get(other.id)
    assert still is not None
    assert still.lease_owner == "c"


async def test_a_published_message_reaches_every_process(stores: list[PostgresJobStore]) -> None:
    heard: list[list[str]] = [[], [], []]
    arrived = asyncio.Event()

    def listener(index: int) -> Callable[[str], None]:
        def hear(message: str) -> None:
            heard[index].append(message)
            if all(heard):
                arrived.set()

        return hear

    for index, store in enumerate(stores):
        await store.leases.subscribe(listener(index))
    await stores[1].leases.publish('{"op": "scan"}')
    await asyncio.wait_for(arrived.wait(), 5)
    assert heard == [['{"op": "scan"}']] * 3


async def test_the_control_connection_comes_back_after_the_server_dropped_it(
    stores: list[PostgresJobStore], postgres_url: str
) -> None:
    store = stores[0]
    heard: list[str] = []
    await store.leases.subscribe(heard.append)
    await stores[1]._pool.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
        " AND application_name = 'imagine-bot' AND query LIKE 'LISTEN%'"
    )
    await asyncio.sleep(0.1)
    await store.leases.renew("a", until=at(1))  # the regular renewal reconnects and listens again
    await stores[1].leases.publish("again")
    for _ in range(100):
        if heard:
            break
        await asyncio.sleep(0.01)
    assert heard == ["again"]
    async with store.exclusive(7):
        pass


async def test_exclusive_holds_across_processes(stores: list[PostgresJobStore]) -> None:
    order: list[str] = []
    first_in = asyncio.Event()

    async def first() -> None:
        async with stores[0].exclusive(99):
            first_in.set()
            await asyncio.sleep(0.05)
            order.append("first out")

    async def second() -> None:
        await first_in.wait()
        async with stores[1].exclusive(99):
            order.append("second in")

    await asyncio.gather(first(), second())
    assert order == ["first out", "second in"]


async def test_a_cancelled_wait_for_a_lock_leaves_it_free(stores: list[PostgresJobStore]) -> None:
    async with stores[0].exclusive(5):
        waiter = asyncio.create_task(stores[1].exclusive(5).__aenter__())
        await asyncio.sleep(0.03)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    async with asyncio.timeout(2), stores[1].exclusive(5):
        pass


async def test_once_holds_across_processes(stores: list[PostgresJobStore]) -> None:
    """Two processes hearing the same 🔄 at the same moment: one reroll."""
    answers = await asyncio.gather(
        *(store.once("reroll:1:2", now=at(0), window=timedelta(seconds=10)) for store in stores * 3)
    )
    assert answers.count(True) == 1
