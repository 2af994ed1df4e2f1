"""Delivery as a stage of the job: retried for hours, across restarts, never holding a poll slot, never twice."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable

import pytest

from bot.emulator import Duration, Emulator, Fault
from bot.jobs import Delivered, Gone, Retry
from bot.jobs.delivery import backoff
from bot.jobs.events import (
    DeliveryDelayed,
    JobCompleted,
    JobDelivered,
    JobDelivering,
    JobFailed,
    JobUndeliverable,
    NoticeShown,
)
from bot.jobs.manager import JobManager
from storage.models import Job, JobState
from storage.sqlite import SQLiteJobStore
from tests.bot.jobs_support import Destination, ManagerFactory, new_job, started, submitted
from tests.clocks import MovableClock


async def until(manager: JobManager, job_id: int, check: Callable[[Job], object], within: float = 10.0) -> Job:
    """The job's row once `check(row)` holds."""
    async with asyncio.timeout(within):
        while True:
            row = await manager.store.get(job_id)
            if row is not None and check(row):
                return row
            await asyncio.sleep(0.01)


async def advance_until(
    clock: MovableClock, done: Callable[[], Awaitable[bool]], step: float = 60.0, limit: int = 200
) -> None:
    """Move the clock in steps (letting the workers run between them) until `done()` is true."""
    for _ in range(limit):
        if await done():
            return
        clock.advance(step)
        await asyncio.sleep(0.02)
    raise AssertionError("never done")


def test_backoff_grows_and_is_capped() -> None:
    assert all(1.0 <= backoff(1) <= 2.0 for _ in range(50))
    assert max(backoff(12) for _ in range(200)) <= 300.0
    assert max(backoff(8) for _ in range(200)) > 60.0


async def test_a_failed_delivery_is_retried_until_it_gets_through_once(
    emulator: Emulator, make_manager: ManagerFactory, clock: MovableClock
) -> None:
    manager = make_manager()
    destination = Destination(script=[Retry("Discord answered 503"), Retry("Discord unreachable"), Retry("503")])
    recorder, _ = await started(manager, destination)
    job = await submitted(manager)

    async def delivered() -> bool:
        return bool(recorder.of(JobDelivered, job.id))

    await advance_until(clock, delivered)
    assert len(destination.images) == 1
    assert len(recorder.of(DeliveryDelayed, job.id)) == 3
    assert [e.attempt for e in recorder.of(JobDelivering, job.id)] == [1, 2, 3, 4]
    row = await manager.store.get(job.id)
    assert row is not None
    assert (row.state, row.delivery_attempts, row.deliver_at, row.delivery_error) == (
        JobState.DELIVERED,
        4,
        None,
        None,
    )


async def test_a_delivery_outlives_a_restart(
    emulator: Emulator, make_manager: ManagerFactory, clock: MovableClock
) -> None:
    first = make_manager()
    first_events, first_destination = await started(first, Destination(script=[Retry("Discord answered 502")]))
    job = await submitted(first)
    delayed = await first_events.wait_for(DeliveryDelayed, job.id)
    await first.stop()
    assert delayed.job.state is JobState.DELIVERING
    assert delayed.job.deliver_at == delayed.retry_at  # the next attempt is written down, not only remembered

    second = make_manager()
    recorder, destination = await started(second)

    async def delivered() -> bool:
        return bool(recorder.of(JobDelivered, job.id))

    await advance_until(clock, delivered)
    assert len(destination.images) == 1
    assert first_destination.images == []
    row = await second.store.get(job.id)
    assert row is not None
    assert row.delivery_attempts == 2
    assert len(emulator.submits) == 1


async def test_a_delivery_that_never_gets_through_ends_undeliverable_after_the_window(
    emulator: Emulator, make_manager: ManagerFactory, clock: MovableClock
) -> None:
    manager = make_manager(delivery_retry_hours=1.0)
    destination = Destination(script=[Retry("Discord answered 503")] * 1000)
    recorder, _ = await started(manager, destination)
    job = await submitted(manager)

    async def ended() -> bool:
        return bool(recorder.of(JobUndeliverable, job.id))

    await advance_until(clock, ended, step=300.0)
    [undeliverable] = recorder.of(JobUndeliverable, job.id)
    assert "Discord was unreachable" in undeliverable.reason
    assert undeliverable.job.state is JobState.UNDELIVERABLE
    assert undeliverable.job.deliver_at is None
    assert len(destination.attempts) > 3


async def test_a_gone_reply_ends_delivery_without_another_attempt(
    emulator: Emulator, make_manager: ManagerFactory, clock: MovableClock
) -> None:
    manager = make_manager()
    destination = Destination(script=[Gone("the reply was deleted")])
    recorder, _ = await started(manager, destination)
    job = await submitted(manager)
    undeliverable = await recorder.wait_for(JobUndeliverable, job.id)
    assert undeliverable.reason == "the reply was deleted"
    clock.advance(3600)
    await asyncio.sleep(0.1)
    assert destination.attempts == [job.id]


@pytest.mark.parametrize(
    "trouble", [RuntimeError("re-encode crashed"), OSError("database is locked")], ids=["bug", "database"]
)
async def test_an_exception_while_delivering_leaves_the_job_scheduled_not_stranded(
    emulator: Emulator, make_manager: ManagerFactory, clock: MovableClock, trouble: BaseException
) -> None:
    manager = make_manager()
    destination = Destination(script=[trouble])
    recorder, _ = await started(manager, destination)
    job = await submitted(manager)

    async def delivered() -> bool:
        return bool(recorder.of(JobDelivered, job.id))

    await advance_until(clock, delivered, step=5.0)
    assert len(destination.images) == 1
    assert recorder.of(DeliveryDelayed, job.id)[0].reason.startswith("unexpected")


async def test_a_failure_notice_is_marked_shown_only_once_discord_confirmed_it(
    emulator: Emulator, make_manager: ManagerFactory, clock: MovableClock
) -> None:
    emulator.config.failure_rate = 1.0
    manager = make_manager()
    destination = Destination(script=[Retry("Discord answered 503"), Retry("Discord answered 503")])
    recorder, _ = await started(manager, destination)
    job = await submitted(manager)
    await recorder.wait_for(JobFailed, job.id)
    await recorder.wait_for(DeliveryDelayed, job.id)
    row = await manager.store.get(job.id)
    assert row is not None
    assert row.notice_pending
    assert row.delivery is None

    async def shown() -> bool:
        return bool(recorder.of(NoticeShown, job.id))

    await advance_until(clock, shown)
    row = await manager.store.get(job.id)
    assert row is not None
    assert (row.state, row.delivery, row.deliver_at) == (JobState.FAILED, "file", None)
    assert [notice.id for notice in destination.notices] == [job.id]


async def test_a_slow_destination_never_holds_up_polling(emulator: Emulator, make_manager: ManagerFactory) -> None:
    """A channel that takes forever (429s, a hung connection) must not delay any other job's polls."""
    emulator.config.run_time = Duration.constant(0.2)
    manager = make_manager(max_concurrent_polls=1)
    gate = asyncio.Event()
    recorder, _ = await started(manager, Destination(gate=gate))
    stuck = await submitted(manager, new_job("stuck channel", channel=1))
    await recorder.wait_for(JobDelivering, stuck.id)  # its delivery now hangs
    others = [await submitted(manager, new_job(f"other {index}", channel=100 + index)) for index in range(3)]
    for job in others:
        await recorder.wait_for(JobCompleted, job.id)  # polled to the end with the one poll slot
    gate.set()
    for job in [stuck, *others]:
        await recorder.wait_for(JobDelivered, job.id)


async def test_a_permanently_broken_result_fails_with_a_notice(
    emulator: Emulator, make_manager: ManagerFactory
) -> None:
    emulator.inject("file", Fault.http(404), times=20)
    manager = make_manager()
    recorder, destination = await started(manager)
    job = await submitted(manager)
    failed = await recorder.wait_for(JobFailed, job.id)
    assert failed.job.state is JobState.FAILED
    await recorder.wait_for(NoticeShown, job.id)
    assert destination.images == []


async def test_the_price_is_asked_once_and_a_failure_is_remembered(
    emulator: Emulator, make_manager: ManagerFactory, clock: MovableClock, store: SQLiteJobStore
) -> None:
    emulator.inject("model", Fault.http(404))
    manager = make_manager()
    await started(manager)
    prices = await asyncio.gather(*(manager.prices.base_price() for _ in range(5)))
    assert prices == [None] * 5
    assert emulator.calls["model"] == 1  # five askers at once share one request
    assert await manager.prices.base_price() is None
    assert emulator.calls["model"] == 1  # a failure is remembered: no new request
    clock.advance(301)
    assert await manager.prices.base_price() == pytest.approx(0.03)


async def test_the_interaction_token_is_cleared_once_the_image_is_delivered(
    emulator: Emulator, make_manager: ManagerFactory
) -> None:
    manager = make_manager()
    recorder, _ = await started(manager, Destination(script=[Delivered("interaction")]))
    secret = new_job()
    secret = dataclasses.replace(secret, origin=dataclasses.replace(secret.origin, interaction_token="tok-123"))
    job = await submitted(manager, secret)
    assert job.origin.interaction_token == "tok-123"
    delivered = await recorder.wait_for(JobDelivered, job.id)
    assert delivered.how == "interaction"
    row = await manager.store.get(job.id)
    assert row is not None
    assert row.origin.interaction_token is None  # a secret nobody needs any more
