"""Job managers of several processes on one real PostgreSQL: take-over, lost leases, requests to the holder.

Each manager has a store of its own (its own pool and control connection), as
a separate process would; they share the emulator over real HTTP. The clock is
real time that a test can move forward, so a lease runs out in no time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest

from bot.emulator import Duration, Emulator, Fault
from bot.jobs import RESTARTED_WHILE_SUBMITTING, CancelOutcome
from bot.jobs.budget import Budget
from bot.jobs.events import JobCancelled, JobDelivered, JobFailed, JobRunning
from bot.jobs.limits import LimitReachedError
from bot.jobs.line import BUDGET_LOCK
from bot.jobs.manager import JobManager
from bot.polling import FixedPolicy
from bot.runcomfy import RunComfyClient
from storage.models import Job, JobState
from storage.postgres.jobs import PostgresJobStore
from tests.bot.conftest import ClientFactory
from tests.bot.jobs_support import MODEL, Destination, Recorder, new_job, started, submitted
from tests.clocks import MovableClock

pytestmark = pytest.mark.postgres

LEASE = 2.0
Factory = Callable[..., JobManager]


@pytest.fixture
async def make_process(postgres_url: str, client: RunComfyClient, clock: MovableClock) -> AsyncIterator[Factory]:
    """A job manager with a store of its own on the shared database: one bot process."""
    made: list[tuple[JobManager, PostgresJobStore]] = []
    stores: list[PostgresJobStore] = []

    async def open_store() -> PostgresJobStore:
        store = await PostgresJobStore.open(postgres_url, max_size=4)
        stores.append(store)
        return store

    def build(owner: str, store: PostgresJobStore, **options: object) -> JobManager:
        settings: dict[str, object] = {"model": MODEL, "policy": FixedPolicy(0.02), "clock": clock}
        settings.update(options)
        chosen = settings.pop("client", client)
        manager = JobManager(chosen, store, owner=owner, lease_seconds=LEASE, **settings)  # type: ignore[arg-type]
        manager.upstream.retry_cap = 0.05
        made.append((manager, store))
        return manager

    build.open_store = open_store  # type: ignore[attr-defined]
    yield build
    for manager, _ in made:
        await manager.stop(grace=1.0)
    for store in stores:
        await store.close()


async def process(make_process: Factory, owner: str, **options: object) -> JobManager:
    store = await make_process.open_store()  # type: ignore[attr-defined]
    return make_process(owner, store, **options)


@dataclass
class Pair:
    """Two started processes on one database, with what each one heard and delivered."""

    first: JobManager
    second: JobManager
    first_events: Recorder
    second_events: Recorder
    first_destination: Destination
    second_destination: Destination


async def two_processes(make_process: Factory, names: tuple[str, str] = ("first", "second"), **options: object) -> Pair:
    """Both started (so both keepers watch for orphans); `options` go to both managers."""
    first = await process(make_process, names[0], **options)
    second = await process(make_process, names[1], **options)
    first_events, first_destination = await started(first)
    second_events, second_destination = await started(second)
    return Pair(first, second, first_events, second_events, first_destination, second_destination)


async def crash(manager: JobManager, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process dies: its workers stop at once and its leases are not given up (they run out)."""
    assert manager.keeper is not None

    async def nothing_released(owner: str) -> int:
        return 0

    monkeypatch.setattr(manager.keeper.leases, "release", nothing_released)
    await manager.stop(grace=0.0)


async def row(manager: JobManager, job_id: int) -> Job:
    job = await manager.store.get(job_id)
    assert job is not None
    return job


async def test_a_dead_processs_jobs_are_taken_over_and_finished_once(
    emulator: Emulator, make_process: Factory, clock: MovableClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator.config.queue_time = Duration.constant(0.3)
    emulator.config.run_time = Duration.constant(0.3)
    pair = await two_processes(make_process)
    jobs = [await submitted(pair.first, new_job(seed=seed)) for seed in range(3)]
    await crash(pair.first, monkeypatch)
    clock.advance(LEASE + 1)  # the leases run out; the survivor's keeper wakes on the jump
    for job in jobs:
        await pair.second_events.wait_for(JobDelivered, job.id)
        done = await row(pair.second, job.id)
        assert done.lease_owner == "second"
    assert pair.second.keeper is not None
    assert pair.second.keeper.taken_over == 3
    assert sorted(job_id for job_id, _ in pair.second_destination.images) == sorted(job.id for job in jobs)
    assert len(emulator.submits) == 3, "nothing was sent twice"


async def test_a_clean_stop_hands_jobs_over_at_once(emulator: Emulator, make_process: Factory) -> None:
    emulator.config.queue_time = Duration.constant(0.5)
    pair = await two_processes(make_process)
    job = await submitted(pair.first)
    await pair.first.stop()  # gives the leases up and says so: no waiting for them to run out
    await pair.second_events.wait_for(JobDelivered, job.id, within=LEASE / 2 + 1.0)
    assert (await row(pair.second, job.id)).lease_owner == "second"
    assert len(emulator.submits) == 1


async def test_a_process_that_lost_its_lease_stops_working_on_the_job(
    emulator: Emulator, make_process: Factory, clock: MovableClock
) -> None:
    """Alive but silent past its lease (say a long pause): another process took the job, and the first's next
    write matches nothing, so it drops the job instead of delivering it a second time."""
    emulator.config.queue_time = Duration.constant(0.6)
    pair = await two_processes(make_process)
    first, second = pair.first, pair.second
    job = await submitted(first)
    assert first.keeper is not None
    await first.keeper.stop()  # no more renewals (and its leases given up); its workers go on
    clock.advance(LEASE + 1)
    for _ in range(200):
        if (await row(second, job.id)).lease_owner == "second":
            break
        await asyncio.sleep(0.01)
    late = await first.ledger.note(job.id, expect=None, queue_position=99)
    assert late is None, "the process that lost the lease changes nothing"
    done = await second.store.get(job.id)
    for _ in range(300):
        done = await second.store.get(job.id)
        if done is not None and done.state is JobState.DELIVERED:
            break
        await asyncio.sleep(0.02)
    assert done is not None
    assert done.state is JobState.DELIVERED
    assert pair.first_destination.images == []
    assert pair.first_events.of(JobDelivered, job.id) == []
    assert len(emulator.submits) == 1


async def test_a_job_found_submitting_is_failed_not_resent(
    emulator: Emulator, make_process: Factory, clock: MovableClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair = await two_processes(make_process)
    first = pair.first
    # The process died right after writing this, before the submit left (or while it was on its way).
    orphan = await first.store.create(new_job(), now=clock.now(), state=JobState.SUBMITTING, lease=first.ledger.lease())
    await crash(first, monkeypatch)
    clock.advance(LEASE + 1)
    failed = await pair.second_events.wait_for(JobFailed, orphan.id)
    assert failed.reason == RESTARTED_WHILE_SUBMITTING
    assert emulator.submits == []


async def test_a_request_taken_over_mid_submit_is_cancelled_upstream(
    emulator: Emulator, make_process: Factory, make_client: ClientFactory, clock: MovableClock
) -> None:
    """The submit was on its way when the lease ran out and another process failed the job as unknown: the
    request RunComfy made is cancelled, so nobody pays for an image nobody will deliver."""
    emulator.config.queue_time = Duration.constant(30.0)
    emulator.inject("submit", Fault.slow(0.8))
    pair = await two_processes(make_process, client=make_client(timeout=5.0))
    first = pair.first
    assert first.keeper is not None
    await first.keeper.stop()
    ticket = await first.enqueue(new_job(), None)
    await first.confirm(ticket.job.id)
    await asyncio.sleep(0.2)  # the submit is on its way
    clock.advance(LEASE + 1)
    failed = await pair.second_events.wait_for(JobFailed, ticket.job.id)
    assert failed.reason == RESTARTED_WHILE_SUBMITTING
    for _ in range(300):
        if emulator.jobs and all(job.cancelled_at is not None for job in emulator.jobs.values()):
            break
        await asyncio.sleep(0.01)
    [upstream] = emulator.jobs.values()
    assert upstream.cancelled_at is not None


async def test_a_cancel_reaches_the_process_holding_the_job(emulator: Emulator, make_process: Factory) -> None:
    emulator.config.queue_time = Duration.constant(30.0)
    pair = await two_processes(make_process, ("holder", "other"))
    holder, other, recorder = pair.first, pair.second, pair.first_events
    job = await submitted(holder)
    assert await other.cancel(job.id) is CancelOutcome.CANCELLED
    await recorder.wait_for(JobCancelled, job.id)
    assert (await row(other, job.id)).state is JobState.CANCELLED

    emulator.config.queue_time = Duration.constant(0.0)
    emulator.config.run_time = Duration.constant(30.0)
    running = await submitted(holder, new_job(seed=9))
    await recorder.wait_for(JobRunning, running.id)
    assert await other.cancel(running.id) is CancelOutcome.TOO_LATE


async def test_a_cancel_for_a_dead_holders_job_is_carried_out_here(
    emulator: Emulator, make_process: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nobody answers for a job whose lease ran out: the process the member clicked in claims it and cancels."""
    emulator.config.queue_time = Duration.constant(30.0)
    pair = await two_processes(make_process, ("dead", "other"))
    dead, other = pair.first, pair.second  # other's keeper sleeps until the dead process's lease runs out
    job = await submitted(dead)
    await crash(dead, monkeypatch)
    await other.store.update(job.id, now=other.clock.now(), lease_until=other.clock.now() - timedelta(seconds=1))
    assert await other.cancel(job.id) is CancelOutcome.CANCELLED
    cancelled = await row(other, job.id)
    assert (cancelled.state, cancelled.lease_owner) == (JobState.CANCELLED, "other")


async def test_a_deleted_reply_reaches_the_holder(emulator: Emulator, make_process: Factory) -> None:
    """The reply of a job another process holds was deleted: the fact is written here, the holder cancels the
    job (it was not paid for yet) and nothing is sent."""
    emulator.config.queue_time = Duration.constant(30.0)
    pair = await two_processes(make_process, ("holder", "other"))
    holder, other, recorder = pair.first, pair.second, pair.first_events
    job = await submitted(holder)
    await other.store.update(job.id, now=other.clock.now(), message_id=555)  # the reply's message
    await other.reply_deleted(555)
    cancelled = await recorder.wait_for(JobCancelled, job.id)
    assert cancelled.job.deleted_at is not None
    assert job.request_id is not None
    assert emulator.jobs[job.request_id].cancelled_at is not None


async def test_the_operators_budget_holds_across_processes(emulator: Emulator, make_process: Factory) -> None:
    """Two processes admit at the same moment against a budget of one image a day: exactly one gets it."""
    emulator.config.queue_time = Duration.constant(30.0)
    pair = await two_processes(make_process, budget=Budget(images_per_day=1))
    first, second = pair.first, pair.second
    settings = [await manager.store.guilds.get(guild) for manager, guild in ((first, 111 << 22), (second, 222 << 22))]

    async def admit(manager: JobManager, index: int) -> bool:
        new = new_job(guild=settings[index].guild_id, seed=index)
        try:
            await manager.enqueue(new, settings[index])
        except LimitReachedError:
            return False
        return True

    async with first.store.exclusive(BUDGET_LOCK):  # both wait here, then race for the one image
        racing = asyncio.gather(admit(first, 0), admit(second, 1))
        await asyncio.sleep(0.05)
    assert sorted(await racing) == [False, True]
