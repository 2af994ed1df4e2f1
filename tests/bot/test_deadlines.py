"""Deadlines never throw away what is paid for: one last look first, the clock starting at the submit."""

from __future__ import annotations

import asyncio

import pytest

from bot.emulator import Duration, Emulator, Fault
from bot.jobs.events import JobCancelled, JobDelivered, JobFailed, JobRunning
from bot.jobs.line import TOO_LONG_IN_LINE
from storage.models import GuildSettings, JobState
from tests.bot.jobs_support import ManagerFactory, Recorder, new_job, started, submitted
from tests.clocks import MovableClock


async def test_a_job_finished_upstream_is_delivered_whatever_its_age(
    emulator: Emulator, make_manager: ManagerFactory, clock: MovableClock
) -> None:
    """The bot was down for twenty minutes (past the 15-minute job timeout) while RunComfy finished the job."""
    emulator.config.run_time = Duration.constant(0.3)
    first = make_manager(job_timeout=900)
    first_events, _ = await started(first)
    job = await submitted(first)
    await first_events.wait_for(JobRunning, job.id)
    await first.stop()
    await asyncio.sleep(0.5)  # RunComfy finishes while the bot is away
    clock.advance(20 * 60)
    recorder, destination = await started(make_manager(job_timeout=900))
    await recorder.wait_for(JobDelivered, job.id)
    assert recorder.of(JobFailed, job.id) == []
    assert len(destination.images) == 1


async def test_a_job_still_queued_upstream_past_its_deadline_is_cancelled_there(
    emulator: Emulator, make_manager: ManagerFactory, clock: MovableClock
) -> None:
    emulator.config.queue_time = Duration.constant(600.0)
    manager = make_manager(job_timeout=60)
    recorder, _ = await started(manager)
    job = await submitted(manager)
    clock.advance(61)
    cancelled = await recorder.wait_for(JobCancelled, job.id)
    assert cancelled.reason is not None
    assert "queue for over 1 minutes" in cancelled.reason
    assert job.request_id is not None
    assert emulator.jobs[job.request_id].cancelled_at is not None
    assert cancelled.job.deliver_at is not None  # the member is told, like any other ending


@pytest.mark.parametrize("where", ["running", "not_cancellable"])
async def test_a_job_that_cannot_be_cancelled_is_waited_for_and_delivered(
    emulator: Emulator, make_manager: ManagerFactory, clock: MovableClock, where: str
) -> None:
    """Past the deadline a running (or not cancellable) job is billed anyway: it is waited for, not failed."""
    if where == "running":
        emulator.config.run_time = Duration.constant(1.0)
    else:
        emulator.config.queue_time = Duration.constant(0.6)
        emulator.config.run_time = Duration.constant(0.2)
    manager = make_manager(job_timeout=60)
    recorder, destination = await started(manager)
    job = await submitted(manager)
    if where == "running":
        await recorder.wait_for(JobRunning, job.id)
    else:
        emulator.inject("cancel", Fault.http(202, {"request_id": job.request_id, "outcome": "not_cancellable"}))
    clock.advance(61)
    overdue = [e for e in await _running_events(recorder, job.id) if e.overdue]
    assert overdue, "the member is told it takes longer, once"
    for _ in range(20):  # the slow looks of an overdue job come at once with the clock moved on
        if recorder.of(JobDelivered, job.id):
            break
        clock.advance(30)
        await asyncio.sleep(0.1)
    await recorder.wait_for(JobDelivered, job.id)
    assert recorder.of(JobFailed, job.id) == []
    assert len(destination.images) == 1


async def _running_events(recorder: Recorder, job_id: int) -> list[JobRunning]:
    for _ in range(200):
        events = [e for e in recorder.of(JobRunning, job_id) if e.overdue]
        if events:
            return events
        await asyncio.sleep(0.01)
    return []


async def test_the_timeout_counts_from_the_submit_not_from_entering_the_line(
    emulator: Emulator, make_manager: ManagerFactory, clock: MovableClock
) -> None:
    emulator.config.run_time = Duration.constant(0.4)
    manager = make_manager(job_timeout=60)
    recorder, _destination = await started(manager)
    ticket = await manager.enqueue(new_job(), None)
    clock.advance(50)  # most of the timeout spent before it was sent
    await manager.confirm(ticket.job.id)
    await recorder.wait_for(JobRunning, ticket.job.id)
    clock.advance(30)  # 80 s after it was asked for, 30 s after it was sent
    await recorder.wait_for(JobDelivered, ticket.job.id)
    assert recorder.of(JobCancelled, ticket.job.id) == []


async def test_a_job_that_waited_in_line_too_long_is_told_before_anything_is_sent(
    emulator: Emulator, make_manager: ManagerFactory, clock: MovableClock
) -> None:
    emulator.config.run_time = Duration.constant(600.0)
    manager = make_manager(job_timeout=900)
    await manager.store.guilds.update(7, now=clock.now(), guild_concurrent=1)
    settings = GuildSettings(guild_id=7, guild_concurrent=1)
    recorder, _destination = await started(manager)
    first = await manager.enqueue(new_job("first", guild=7), settings)
    await manager.confirm(first.job.id, message_id=1001)
    await recorder.wait_for(JobRunning, first.job.id)
    second = await manager.enqueue(new_job("second", guild=7), settings)
    await manager.confirm(second.job.id, message_id=1002)
    clock.advance(901)
    failed = await recorder.wait_for(JobFailed, second.job.id)
    assert failed.reason == TOO_LONG_IN_LINE.format(minutes=15)
    assert emulator.submits_for("second") == 0
    row = await manager.store.get(second.job.id)
    assert row is not None
    assert row.state is JobState.FAILED
