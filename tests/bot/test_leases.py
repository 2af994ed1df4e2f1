"""Job managers of several processes on one real PostgreSQL: take-over, lost leases, requests to the holder.

Each manager has a store of its own (its own pool and control connection), as
a separate process would; they share the emulator over real HTTP. The clock is
real time that a test can move forward, so a lease runs out in no time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import pytest

from bot.emulator import Duration, Emulator, Fault
from bot.jobs import RESTARTED_WHILE_SUBMITTING, CancelOutcome
from bot.jobs.budget import Budget
from bot.jobs.events import JobCancelled, JobCompleted, JobDelivered, JobFailed, JobRunning
from bot.jobs.limits import LimitReachedError
from bot.jobs.line import BUDGET_LOCK
from bot.jobs.manager import JobManager
from bot.polling import FixedPolicy
from bot.runcomfy import RunComfyClient
from storage.models import Job, JobState
from storage.postgres.jobs import PostgresJobStore
from storage.sqlite_common import StoreUnavailableError
from tests.bot.conftest import ClientFactory
from tests.bot.jobs_support import MODEL, Destination, Recorder, new_job, started, submitted
from tests.clocks import MovableClock

pytestmark = pytest.mark.postgres

LEASE = 2.0


class Processes:
    """Job managers with stores of their own on one database: bot processes, which a test may crash."""

    def __init__(self, url: str, client: RunComfyClient, clock: MovableClock, monkeypatch: pytest.MonkeyPatch):
        self.url = url
        self.client = client
        self.clock = clock
        self.monkeypatch = monkeypatch
        self.running: list[JobManager] = []

    async def new(self, owner: str, **options: object) -> JobManager:
        store = await PostgresJobStore.open(self.url, max_size=4)
        settings: dict[str, object] = {"model": MODEL, "policy": FixedPolicy(0.02), "clock": self.clock}
        settings.update(options)
        chosen = settings.pop("client", self.client)
        manager = JobManager(chosen, store, owner=owner, lease_seconds=LEASE, **settings)  # type: ignore[arg-type]
        manager.upstream.retry_cap = 0.05
        self.running.append(manager)
        return manager

    async def crash(self, manager: JobManager) -> None:
        """The process dies: its workers stop at once, its leases are not given up (they run out), and its
        connections go with it, so it hears and answers nothing any more."""
        assert manager.keeper is not None

        async def nothing_released(owner: str, **_: object) -> int:
            return 0

        self.monkeypatch.setattr(manager.keeper.leases, "release", nothing_released)
        await manager.stop(grace=0.0)
        await manager.store.close()
        self.running.remove(manager)

    async def stop_all(self) -> None:
        for manager in self.running:
            await manager.stop(grace=1.0)
            await manager.store.close()


@pytest.fixture
async def processes(
    postgres_url: str, client: RunComfyClient, clock: MovableClock, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Processes]:
    made = Processes(postgres_url, client, clock, monkeypatch)
    yield made
    await made.stop_all()


@dataclass
class Pair:
    """Two started processes on one database, with what each one heard and delivered."""

    first: JobManager
    second: JobManager
    first_events: Recorder
    second_events: Recorder
    first_destination: Destination
    second_destination: Destination


async def two_processes(processes: Processes, names: tuple[str, str] = ("first", "second"), **options: object) -> Pair:
    """Both started (so both keepers watch for orphans); `options` go to both managers."""
    first = await processes.new(names[0], **options)
    second = await processes.new(names[1], **options)
    first_events, first_destination = await started(first)
    second_events, second_destination = await started(second)
    return Pair(first, second, first_events, second_events, first_destination, second_destination)


async def row(manager: JobManager, job_id: int) -> Job:
    job = await manager.store.get(job_id)
    assert job is not None
    return job


async def test_a_dead_processs_jobs_are_taken_over_and_finished_once(
    emulator: Emulator, processes: Processes, clock: MovableClock
) -> None:
    emulator.config.queue_time = Duration.constant(0.3)
    emulator.config.run_time = Duration.constant(0.3)
    pair = await two_processes(processes)
    jobs = [await submitted(pair.first, new_job(seed=seed)) for seed in range(3)]
    await processes.crash(pair.first)
    clock.advance(LEASE + 1)  # the leases run out; the survivor's keeper wakes on the jump
    for job in jobs:
        await pair.second_events.wait_for(JobDelivered, job.id)
        done = await row(pair.second, job.id)
        assert done.lease_owner == "second"
    assert pair.second.keeper is not None
    assert pair.second.keeper.taken_over == 3
    assert sorted(job_id for job_id, _ in pair.second_destination.images) == sorted(job.id for job in jobs)
    assert len(emulator.submits) == 3, "nothing was sent twice"


async def test_a_clean_stop_hands_jobs_over_at_once(emulator: Emulator, processes: Processes) -> None:
    emulator.config.queue_time = Duration.constant(0.5)
    pair = await two_processes(processes)
    job = await submitted(pair.first)
    await pair.first.stop()  # gives the leases up and says so: no waiting for them to run out
    await pair.second_events.wait_for(JobDelivered, job.id, within=LEASE / 2 + 1.0)
    assert (await row(pair.second, job.id)).lease_owner == "second"
    assert len(emulator.submits) == 1


async def test_a_process_that_lost_its_lease_stops_working_on_the_job(
    emulator: Emulator, processes: Processes, clock: MovableClock
) -> None:
    """Alive but silent past its lease (say a long pause): another process took the job, and the first's next
    write matches nothing, so it drops the job instead of delivering it a second time."""
    emulator.config.queue_time = Duration.constant(0.6)
    pair = await two_processes(processes)
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
    emulator: Emulator, processes: Processes, clock: MovableClock
) -> None:
    pair = await two_processes(processes)
    first = pair.first
    # The process died right after writing this, before the submit left (or while it was on its way).
    orphan = await first.store.create(new_job(), now=clock.now(), state=JobState.SUBMITTING, lease=first.ledger.lease())
    await processes.crash(first)
    clock.advance(LEASE + 1)
    failed = await pair.second_events.wait_for(JobFailed, orphan.id)
    assert failed.reason == RESTARTED_WHILE_SUBMITTING
    assert emulator.submits == []


async def test_a_request_taken_over_mid_submit_is_cancelled_upstream(
    emulator: Emulator, processes: Processes, make_client: ClientFactory, clock: MovableClock
) -> None:
    """The submit was on its way when the lease ran out and another process failed the job as unknown: the
    request RunComfy made is cancelled, so nobody pays for an image nobody will deliver."""
    emulator.config.queue_time = Duration.constant(30.0)
    emulator.inject("submit", Fault.slow(0.8))
    pair = await two_processes(processes, client=make_client(timeout=5.0))
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


async def test_a_cancel_reaches_the_process_holding_the_job(emulator: Emulator, processes: Processes) -> None:
    emulator.config.queue_time = Duration.constant(30.0)
    pair = await two_processes(processes, ("holder", "other"))
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


async def test_a_cancel_for_a_dead_holders_job_is_carried_out_here(emulator: Emulator, processes: Processes) -> None:
    """Nobody answers for a job whose lease ran out: the process the member clicked in claims it and cancels."""
    emulator.config.queue_time = Duration.constant(30.0)
    pair = await two_processes(processes, ("dead", "other"))
    dead, other = pair.first, pair.second  # other's keeper sleeps until the dead process's lease runs out
    job = await submitted(dead)
    await processes.crash(dead)
    await other.store.update(job.id, now=other.clock.now(), lease_until=other.clock.now() - timedelta(seconds=1))
    assert await other.cancel(job.id) is CancelOutcome.CANCELLED
    cancelled = await row(other, job.id)
    assert (cancelled.state, cancelled.lease_owner) == (JobState.CANCELLED, "other")


async def test_a_deleted_reply_reaches_the_holder(emulator: Emulator, processes: Processes) -> None:
    """The reply of a job another process holds was deleted: the fact is written here, the holder cancels the
    job (it was not paid for yet) and nothing is sent."""
    emulator.config.queue_time = Duration.constant(30.0)
    pair = await two_processes(processes, ("holder", "other"))
    holder, other, recorder = pair.first, pair.second, pair.first_events
    job = await submitted(holder)
    await other.store.update(job.id, now=other.clock.now(), message_id=555)  # the reply's message
    await other.departures.reply_deleted(555)
    cancelled = await recorder.wait_for(JobCancelled, job.id)
    assert cancelled.job.deleted_at is not None
    assert job.request_id is not None
    assert emulator.jobs[job.request_id].cancelled_at is not None


async def test_the_operators_budget_holds_across_processes(emulator: Emulator, processes: Processes) -> None:
    """Two processes admit at the same moment against a budget of one image a day: exactly one gets it."""
    emulator.config.queue_time = Duration.constant(30.0)
    pair = await two_processes(processes, budget=Budget(images_per_day=1))
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


async def test_a_clean_stop_waits_for_a_submit_on_its_way_before_handing_over(
    emulator: Emulator, processes: Processes, make_client: ClientFactory
) -> None:
    """A rolling restart while a submit is in flight: the stopping process records the request first, then hands
    the job over; the other process polls and delivers it (not "restarted while submitting", billed for nothing)."""
    emulator.config.queue_time = Duration.constant(0.3)
    emulator.inject("submit", Fault.slow(0.6))
    pair = await two_processes(processes, client=make_client(timeout=5.0))
    ticket = await pair.first.enqueue(new_job(), None)
    await pair.first.confirm(ticket.job.id)
    await asyncio.sleep(0.2)  # the submit is on its way
    await pair.first.stop(grace=5.0)
    delivered = await pair.second_events.wait_for(JobDelivered, ticket.job.id)
    assert delivered.job.lease_owner == "second"
    assert len(emulator.submits) == 1


async def test_a_slot_freed_by_one_process_starts_the_waiting_job_another_holds(
    emulator: Emulator, processes: Processes
) -> None:
    """After a take-over a server's jobs are split between processes: when one process's job leaves the server's
    only slot, the other process's waiting job starts at once, not when it has waited too long."""
    emulator.config.queue_time = Duration.constant(0.4)
    pair = await two_processes(processes, job_timeout=60.0)
    guild = 333 << 22
    settings = await pair.first.store.guilds.update(guild, now=pair.first.clock.now(), guild_concurrent=1)
    first = await pair.first.enqueue(new_job(guild=guild, seed=1), settings)
    await pair.first.confirm(first.job.id, message_id=1001)
    second = await pair.second.enqueue(new_job(guild=guild, seed=2), settings)
    await pair.second.confirm(second.job.id, message_id=1002)
    await pair.first_events.wait_for(JobCompleted, first.job.id)
    await pair.second_events.wait_for(JobDelivered, second.job.id, within=5.0)
    assert len(emulator.submits) == 2


async def test_a_job_taken_over_but_not_resumed_is_given_up_and_taken_again(
    emulator: Emulator, processes: Processes, clock: MovableClock
) -> None:
    emulator.config.queue_time = Duration.constant(0.3)
    pair = await two_processes(processes)
    job = await submitted(pair.first)
    second = pair.second
    assert second.keeper is not None
    resume = second.keeper._resume
    failures = [StoreUnavailableError("db", "the server went away")]

    async def flaky(taken: Job) -> None:
        if failures:
            raise failures.pop()
        await resume(taken)

    processes.monkeypatch.setattr(second.keeper, "_resume", flaky)
    await processes.crash(pair.first)
    clock.advance(LEASE + 1)
    await pair.second_events.wait_for(JobDelivered, job.id)
    assert failures == []
    assert len(emulator.submits) == 1


async def test_cancelling_a_finished_job_of_a_process_gone_for_good_answers_at_once(
    emulator: Emulator, processes: Processes
) -> None:
    pair = await two_processes(processes)
    job = await submitted(pair.first)
    await pair.first_events.wait_for(JobDelivered, job.id)
    await processes.crash(pair.first)  # its name stays on the finished job
    assert await asyncio.wait_for(pair.second.cancel(job.id), 1.0) is CancelOutcome.ALREADY_FINISHED
