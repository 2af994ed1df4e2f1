"""The job manager against the emulator over real HTTP, with a real SQLite file: the upstream half of a job."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from bot.emulator import Duration, Emulator, Fault
from bot.jobs import RESTARTED_WHILE_SUBMITTING, CancelOutcome
from bot.jobs.events import (
    JobAccepted,
    JobCancelled,
    JobCompleted,
    JobDelivered,
    JobFailed,
    JobQueued,
    JobRunning,
)
from bot.jobs.manager import JobManager
from bot.polling import PRIORS, FixedPolicy
from bot.runcomfy import CancelResult, RunComfyClient
from storage.models import FailureKind, JobInput, JobState
from storage.sqlite import SQLiteJobStore
from tests.bot.conftest import ClientFactory
from tests.bot.jobs_support import MODEL, ManagerFactory, new_job, started, submitted
from tests.storage.peek import stored_images

ANY = tuple(JobState)


async def test_job_goes_from_prompt_to_a_delivered_image(emulator: Emulator, make_manager: ManagerFactory) -> None:
    emulator.config.queue_time = Duration.constant(0.15)
    emulator.config.run_time = Duration.constant(0.15)
    manager = make_manager()
    recorder, destination = await started(manager)
    job = await submitted(manager)
    assert job.state is JobState.IN_QUEUE
    assert job.request_id in emulator.jobs

    delivered = await recorder.wait_for(JobDelivered, job.id)
    assert delivered.how == "file"
    [(job_id, image)] = destination.images
    assert job_id == job.id
    assert image.format == "PNG"
    assert image.width / image.height == pytest.approx(16 / 9, rel=0.02)
    assert recorder.kinds(job.id) == [
        "JobAccepted",
        "JobSubmitting",
        "JobQueued",
        *(["JobQueued"] * (recorder.kinds(job.id).count("JobQueued") - 1)),
        "JobRunning",
        "JobCompleted",
        "JobDelivering",
        "JobDelivered",
    ]
    row = await manager.store.get(job.id)
    assert row is not None
    assert row.state is JobState.DELIVERED
    assert row.delivery == "file"
    assert row.deliver_at is None
    assert row.delivery_attempts == 1
    assert row.cost_usd == pytest.approx(0.03)
    assert (row.queued_at, row.started_at, row.completed_at, row.finished_at) != (None, None, None, None)
    assert emulator.submits_for("a red fox, watercolor", 7, "16:9") == 1


async def test_queue_positions_are_reported_as_they_count_down(
    emulator: Emulator, make_manager: ManagerFactory
) -> None:
    emulator.config.queue_time = Duration.constant(0.6)
    emulator.config.queue_position_start = 3
    emulator.config.run_time = Duration.constant(0.05)
    manager = make_manager()
    recorder, _ = await started(manager)
    job = await submitted(manager)
    await recorder.wait_for(JobDelivered, job.id)
    positions = [e.position for e in recorder.of(JobQueued, job.id) if e.position is not None]
    assert positions[0] == 3
    assert positions == sorted(positions, reverse=True)
    assert len(set(positions)) >= 2


@pytest.mark.parametrize(
    "fault",
    [Fault.drop(process=True), Fault.slow(3.0), Fault.http(502, process=True), Fault.malformed(process=True)],
    ids=["dropped", "timeout", "502", "garbage"],
)
async def test_lost_submit_answer_is_never_repeated(
    emulator: Emulator, make_manager: ManagerFactory, make_client: ClientFactory, fault: Fault
) -> None:
    emulator.inject("submit", fault)
    manager = make_manager(client=make_client(timeout=0.5))
    recorder, _ = await started(manager)
    ticket = await manager.enqueue(new_job(), None)
    await manager.confirm(ticket.job.id)
    failed = await recorder.wait_for(JobFailed, ticket.job.id)
    assert "not resent" in failed.reason or "charge" in failed.reason.lower()
    assert failed.kind is FailureKind.FINAL
    await manager.stop()
    # A restart does not send it again either.
    await started(make_manager())
    await asyncio.sleep(0.1)
    assert emulator.submits_for("a red fox, watercolor") == 1


async def test_restart_while_submitting_fails_clearly_without_resubmitting(
    emulator: Emulator, make_manager: ManagerFactory, store: SQLiteJobStore
) -> None:
    orphan = await store.create(new_job(), now=datetime.now(UTC))  # the process died right after this write
    recorder, destination = await started(make_manager())
    failed = await recorder.wait_for(JobFailed, orphan.id)
    assert failed.reason == RESTARTED_WHILE_SUBMITTING
    assert emulator.submits == []
    # The member is told, and only once Discord confirmed it is the notice marked shown.
    for _ in range(200):
        row = await store.get(orphan.id)
        if row is not None and row.delivery is not None:
            break
        await asyncio.sleep(0.01)
    assert [job.id for job in destination.notices] == [orphan.id]
    assert row is not None
    assert row.delivery == "file"
    assert row.deliver_at is None


@pytest.mark.parametrize("state", [JobState.IN_QUEUE, JobState.IN_PROGRESS])
async def test_restart_resumes_pending_jobs_and_finishes_them_once(
    emulator: Emulator, make_manager: ManagerFactory, state: JobState
) -> None:
    emulator.config.queue_time = Duration.constant(0.4 if state is JobState.IN_QUEUE else 0.0)
    emulator.config.run_time = Duration.constant(0.8)
    first = make_manager()
    first_events, _ = await started(first)
    job = await submitted(first)
    if state is JobState.IN_PROGRESS:
        await first_events.wait_for(JobRunning, job.id)
    await first.stop()  # the process goes away mid-job
    row = await first.store.get(job.id)
    assert row is not None
    assert row.state is state

    recorder, destination = await started(make_manager())
    await recorder.wait_for(JobDelivered, job.id)
    assert len(destination.images) == 1
    assert len(emulator.submits) == 1


@pytest.mark.parametrize("state", [JobState.DELIVERED, JobState.FAILED, JobState.CANCELLED, JobState.UNDELIVERABLE])
async def test_final_jobs_are_not_resumed(
    emulator: Emulator, make_manager: ManagerFactory, store: SQLiteJobStore, state: JobState
) -> None:
    job = await store.create(new_job(), now=datetime.now(UTC))
    await store.transition(job.id, state, expect=ANY, now=datetime.now(UTC))
    manager = make_manager()
    recorder, destination = await started(manager)
    await asyncio.sleep(0.1)
    assert recorder.events == []
    assert destination.attempts == []
    assert manager.pending == 0


async def test_resume_filter_leaves_other_jobs_alone(
    emulator: Emulator, make_manager: ManagerFactory, store: SQLiteJobStore
) -> None:
    await store.create(new_job(), now=datetime.now(UTC))
    manager = make_manager()
    recorder, _ = await started(manager, resume=lambda job: False)
    await asyncio.sleep(0.05)
    assert recorder.events == []


async def test_cancel_waiting_queued_and_too_late(emulator: Emulator, make_manager: ManagerFactory) -> None:
    emulator.config.queue_time = Duration.constant(30.0)
    manager = make_manager()
    recorder, _destination = await started(manager)
    waiting = await manager.enqueue(new_job(seed=1), None)  # never confirmed: still in the line
    assert await manager.cancel(waiting.job.id) is CancelOutcome.CANCELLED
    queued = await submitted(manager)
    assert await manager.cancel(queued.id) is CancelOutcome.CANCELLED
    cancelled = await recorder.wait_for(JobCancelled, queued.id)
    assert cancelled.job.state is JobState.CANCELLED
    assert await manager.cancel(queued.id) is CancelOutcome.ALREADY_FINISHED

    emulator.config.queue_time = Duration.constant(0.0)
    emulator.config.run_time = Duration.constant(30.0)
    running = await submitted(manager, new_job(seed=8))
    await recorder.wait_for(JobRunning, running.id)
    assert await manager.cancel(running.id) is CancelOutcome.TOO_LATE
    assert await manager.cancel(10_000) is CancelOutcome.UNKNOWN_JOB
    assert emulator.submits_for("a red fox, watercolor", 1) == 0


async def test_cancel_refused_upstream_is_reported_as_too_late(
    emulator: Emulator, make_manager: ManagerFactory
) -> None:
    emulator.config.queue_time = Duration.constant(30.0)
    manager = make_manager(policy=FixedPolicy(10.0))
    await started(manager)
    job = await submitted(manager)
    emulator.inject("cancel", Fault.http(202, {"request_id": job.request_id, "outcome": "not_cancellable"}))
    assert await manager.cancel(job.id) is CancelOutcome.TOO_LATE
    row = await manager.store.get(job.id)
    assert row is not None
    assert row.state is JobState.IN_QUEUE


async def test_a_cancel_that_its_own_poll_records_first_is_still_cancelled(
    emulator: Emulator, make_manager: ManagerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The member's cancel reaches RunComfy, and the job's next poll hears "cancelled" and writes it before the
    cancel does: the member is told it was cancelled, not that it was too late (CI caught this on PostgreSQL)."""
    emulator.config.queue_time = Duration.constant(30.0)
    manager = make_manager(policy=FixedPolicy(0.02))
    recorder, _ = await started(manager)
    job = await submitted(manager)
    real_cancel = manager.upstream.client.cancel

    async def cancel_then_let_the_poll_win(request_id: str) -> CancelResult:
        answer = await real_cancel(request_id)
        polled = await recorder.wait_for(JobCancelled, job.id)  # the poll saw upstream's "cancelled" and wrote it
        assert polled.reason is None  # the member reads what any cancel of theirs says, not "RunComfy cancelled it"
        return answer

    monkeypatch.setattr(manager.upstream.client, "cancel", cancel_then_let_the_poll_win)
    assert await manager.cancel(job.id) is CancelOutcome.CANCELLED
    assert sum(isinstance(event, JobCancelled) and event.job.id == job.id for event in recorder.events) == 1


async def test_a_job_runcomfy_cancels_by_itself_says_so(emulator: Emulator, make_manager: ManagerFactory) -> None:
    emulator.config.queue_time = Duration.constant(30.0)
    manager = make_manager(policy=FixedPolicy(0.02))
    recorder, _ = await started(manager)
    job = await submitted(manager)
    assert job.request_id is not None
    emulator.jobs[job.request_id].cancelled_at = asyncio.get_running_loop().time()  # cancelled on RunComfy's side
    cancelled = await recorder.wait_for(JobCancelled, job.id)
    assert cancelled.reason == "RunComfy cancelled it."


async def test_upstream_failure_reaches_members_in_plain_words_and_the_operator_in_detail(
    emulator: Emulator, make_manager: ManagerFactory
) -> None:
    emulator.config.failure_rate = 1.0
    emulator.config.failure_message = "NSFW content detected"
    manager = make_manager()
    recorder, _ = await started(manager)
    job = await submitted(manager)
    failed = await recorder.wait_for(JobFailed, job.id)
    assert "NSFW" not in failed.reason
    assert failed.detail is not None
    assert "NSFW content detected" in failed.detail
    assert failed.kind is FailureKind.REFUSED
    assert failed.job.state is JobState.FAILED
    assert failed.job.error == failed.reason
    assert failed.job.failure_kind is FailureKind.REFUSED


async def test_transient_errors_are_retried_until_the_job_finishes(
    emulator: Emulator, make_manager: ManagerFactory
) -> None:
    emulator.config.queue_time = Duration.constant(0.1)
    emulator.config.run_time = Duration.constant(0.1)
    emulator.inject("status", Fault.http(503), times=6)  # more than one call's retries
    emulator.inject("result", Fault.http(429, retry_after="0"), times=2)
    manager = make_manager()
    recorder, _ = await started(manager)
    job = await submitted(manager)
    await recorder.wait_for(JobDelivered, job.id)


async def test_expired_request_id_fails_the_job(emulator: Emulator, make_manager: ManagerFactory) -> None:
    emulator.config.queue_time = Duration.constant(30.0)
    manager = make_manager()
    recorder, _ = await started(manager)
    job = await submitted(manager)
    assert job.request_id is not None
    emulator.expire(job.request_id)
    failed = await recorder.wait_for(JobFailed, job.id)
    assert not failed.retryable or "again" in failed.reason


async def test_unknown_state_is_tolerated_for_a_bounded_time(emulator: Emulator, make_manager: ManagerFactory) -> None:
    emulator.config.unknown_state = "warming_up"
    emulator.config.queue_time = Duration.constant(30.0)
    manager = make_manager(unknown_state_timeout=0.3)
    recorder, _ = await started(manager)
    job = await submitted(manager)
    failed = await recorder.wait_for(JobFailed, job.id)
    assert "state" in failed.reason


async def test_submit_refusals_fail_the_job_without_polling(emulator: Emulator, make_manager: ManagerFactory) -> None:
    emulator.inject("submit", Fault.error_code(400002, message="insufficient balance"))
    manager = make_manager()
    recorder, _ = await started(manager)
    ticket = await manager.enqueue(new_job(channel=None), None)
    await manager.confirm(ticket.job.id)
    failed = await recorder.wait_for(JobFailed, ticket.job.id)
    assert "out of credit" in failed.reason
    assert failed.detail is not None
    assert "400002" in failed.detail
    assert manager.upstream.worker.pending == 0


async def test_many_pending_jobs_share_one_poll_task(emulator: Emulator, make_manager: ManagerFactory) -> None:
    emulator.config.queue_time = Duration.constant(60.0)
    manager = make_manager(policy=FixedPolicy(5.0))
    await started(manager)
    jobs = [await manager.enqueue(new_job(seed=seed), None) for seed in range(200)]
    for ticket in jobs:
        await manager.confirm(ticket.job.id)
    for _ in range(500):
        if manager.upstream.worker.pending == 200 and not manager._tasks:
            break
        await asyncio.sleep(0.01)
    before = len(asyncio.all_tasks())
    await asyncio.sleep(0.05)
    assert manager.upstream.worker.pending == 200
    assert len(asyncio.all_tasks()) - before <= 2


async def test_adaptive_policy_learns_from_stored_history(
    emulator: Emulator, client: RunComfyClient, store: SQLiteJobStore
) -> None:
    now = datetime.now(UTC)
    for index in range(len(PRIORS[MODEL].run)):  # as many as the shipped prior has points: it is then replaced
        job = await store.create(new_job(seed=index), now=now)
        await store.transition(job.id, JobState.IN_QUEUE, expect=ANY, now=now)
        await store.transition(job.id, JobState.IN_PROGRESS, expect=ANY, now=now + timedelta(seconds=1))
        await store.transition(job.id, JobState.COMPLETED, expect=ANY, now=now + timedelta(seconds=9))
        await store.transition(job.id, JobState.DELIVERED, expect=ANY, now=now + timedelta(seconds=9))
    manager = JobManager(client, store, model=MODEL)
    await started(manager)
    try:
        running = await store.create(new_job(seed=99), now=now)
        moved = await store.transition(running.id, JobState.IN_PROGRESS, expect=ANY, now=now)
        assert moved is not None
        assert manager.eta(moved) == now + timedelta(seconds=8)
    finally:
        await manager.stop()


async def test_every_transition_is_one_event(emulator: Emulator, make_manager: ManagerFactory) -> None:
    manager = make_manager()
    recorder, _ = await started(manager)
    job = await submitted(manager)
    await recorder.wait_for(JobDelivered, job.id)
    assert len(recorder.of(JobAccepted, job.id)) == 1
    assert len(recorder.of(JobCompleted, job.id)) == 1
    assert len(recorder.of(JobDelivered, job.id)) == 1


async def test_finished_jobs_past_the_retention_are_pruned_soon_after_the_start(
    emulator: Emulator, make_manager: ManagerFactory, store: SQLiteJobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bot.jobs.manager.PRUNE_FIRST_DELAY", 0.0)
    long_ago = datetime.now(UTC) - timedelta(days=40)
    old = await store.create(new_job("old"), now=long_ago)
    await store.transition(old.id, JobState.DELIVERED, expect=ANY, now=long_ago)
    recent = await store.create(new_job("recent"), now=datetime.now(UTC))
    await store.transition(recent.id, JobState.DELIVERED, expect=ANY, now=datetime.now(UTC))
    manager = make_manager(retention_days=30)
    await started(manager)
    async with asyncio.timeout(5):
        while True:
            if await store.get(old.id) is None:
                break
            await asyncio.sleep(0.01)
    assert await store.get(recent.id) is not None


async def test_an_image_no_job_names_is_swept_even_when_jobs_are_kept_for_ever(
    emulator: Emulator, make_manager: ManagerFactory, store: SQLiteJobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An edit that ended while its image was read (or a process dying between storing and naming it) leaves an
    image no job names. With JOB_RETENTION_DAYS=0 no job is ever pruned, but such an image still goes."""
    monkeypatch.setattr("bot.jobs.manager.PRUNE_FIRST_DELAY", 0.0)
    image = JobInput("image/png", 2, 2, b"\x89PNG")
    await store.inputs.add(image, now=datetime.now(UTC) - timedelta(days=2))
    edit = dataclasses.replace(new_job(guild=5), input_url="https://cdn.example/in.png")
    kept = await store.create(edit, now=datetime.now(UTC), state=JobState.WAITING)
    assert await store.give_input(kept.id, await store.inputs.add(image, now=datetime.now(UTC)), now=datetime.now(UTC))
    assert await stored_images(store) == 2
    await started(make_manager(retention_days=0))
    async with asyncio.timeout(5):
        while True:
            if await stored_images(store) == 1:
                break
            await asyncio.sleep(0.01)
    assert await store.inputs.get(kept.id) == image  # a live edit's image is not touched
