"""The job manager against the emulator over real HTTP, with a real SQLite file."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.emulator import Duration, Emulator, Fault
from bot.events import JobCancelled, JobCompleted, JobEvent, JobFailed, JobQueued, JobRunning
from bot.jobs import RESTARTED_WHILE_SUBMITTING, CancelOutcome, JobManager
from bot.polling import PRIORS, FixedPolicy
from bot.runcomfy import RunComfyClient
from storage.models import JobOrigin, JobState, NewJob
from storage.sqlite import SQLiteJobStore
from tests.bot.conftest import ClientFactory

MODEL = "imagineart/imagineart-1.5-preview/text-to-image"


@dataclass
class Recorder:
    events: list[JobEvent] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, event: JobEvent) -> None:
        self.events.append(event)
        self.changed.set()

    async def wait_for(self, kind: type, job_id: int, within: float = 10.0) -> JobEvent:
        async def find() -> JobEvent:
            while True:
                for event in self.events:
                    if isinstance(event, kind) and event.job.id == job_id:
                        return event
                self.changed.clear()
                await self.changed.wait()

        return await asyncio.wait_for(find(), within)

    def kinds(self, job_id: int) -> list[str]:
        return [type(event).__name__ for event in self.events if event.job.id == job_id]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteJobStore]:
    async with await SQLiteJobStore.open(tmp_path / "jobs.sqlite3") as opened:
        yield opened


ManagerFactory = Callable[..., JobManager]


@pytest.fixture
async def make_manager(client: RunComfyClient, store: SQLiteJobStore) -> AsyncIterator[ManagerFactory]:
    made: list[JobManager] = []

    def build(**options: object) -> JobManager:
        settings: dict[str, object] = {"model": MODEL, "policy": FixedPolicy(0.02), "retry_cap": 0.05}
        settings.update(options)
        manager = JobManager(client, store, **settings)  # type: ignore[arg-type]
        made.append(manager)
        return manager

    yield build
    for manager in made:
        await manager.stop()


def new_job(prompt: str = "a red fox, watercolor", seed: int = 7, ratio: str = "16:9") -> NewJob:
    return NewJob(model=MODEL, prompt=prompt, aspect_ratio=ratio, seed=seed, origin=JobOrigin(channel_id=1))


async def started(manager: JobManager, recorder: Recorder | None = None) -> Recorder:
    recorder = recorder or Recorder()
    manager.subscribe(recorder)
    await manager.start()
    return recorder


async def test_job_goes_from_prompt_to_verified_image(emulator: Emulator, make_manager: ManagerFactory) -> None:
    emulator.config.queue_time = Duration.constant(0.15)
    emulator.config.run_time = Duration.constant(0.15)
    manager = make_manager()
    recorder = await started(manager)
    job = await manager.submit(new_job())
    assert job.state is JobState.IN_QUEUE
    assert job.request_id in emulator.jobs

    completed = await recorder.wait_for(JobCompleted, job.id)
    assert isinstance(completed, JobCompleted)
    assert completed.image.format == "PNG"
    assert completed.image.width / completed.image.height == pytest.approx(16 / 9, rel=0.02)
    assert recorder.kinds(job.id)[0] == "JobQueued"
    assert "JobRunning" in recorder.kinds(job.id)

    row = await manager.store.get(job.id)
    assert row is not None
    assert row.state is JobState.COMPLETED
    assert row.result_url is not None
    assert row.cost_usd == pytest.approx(0.03)
    assert row.queued_at is not None
    assert row.started_at is not None
    assert row.completed_at is not None
    delivered = await manager.mark_delivered(job.id, "file")
    assert delivered.state is JobState.DELIVERED
    assert delivered.delivery == "file"
    assert emulator.submits_for("a red fox, watercolor", 7, "16:9") == 1


async def test_queue_positions_are_reported_as_they_count_down(
    emulator: Emulator, make_manager: ManagerFactory
) -> None:
    emulator.config.queue_time = Duration.constant(0.6)
    emulator.config.queue_position_start = 3
    emulator.config.run_time = Duration.constant(0.05)
    manager = make_manager()
    recorder = await started(manager)
    job = await manager.submit(new_job())
    await recorder.wait_for(JobCompleted, job.id)
    positions = [e.position for e in recorder.events if isinstance(e, JobQueued) and e.position is not None]
    assert positions[0] == 3
    assert positions == sorted(positions, reverse=True)
    assert len(set(positions)) >= 2


@pytest.mark.parametrize(
    "fault",
    [Fault.drop(process=True), Fault.slow(3.0), Fault.http(502, process=True), Fault.malformed(process=True)],
    ids=["dropped", "timeout", "502", "garbage"],
)
async def test_lost_submit_answer_is_never_repeated(
    emulator: Emulator, make_manager: ManagerFactory, make_client: ClientFactory, store: SQLiteJobStore, fault: Fault
) -> None:
    emulator.inject("submit", fault)
    manager = make_manager()
    manager.client = make_client(timeout=0.5)
    recorder = await started(manager)
    job = await manager.submit(new_job())
    assert job.state is JobState.FAILED
    failed = await recorder.wait_for(JobFailed, job.id)
    assert isinstance(failed, JobFailed)
    assert "charge" in failed.reason.lower() or "not sent again" in failed.reason.lower() or "may" in failed.reason
    await manager.stop()
    # A restart does not send it again either.
    again = make_manager()
    await started(again)
    await asyncio.sleep(0.1)
    assert emulator.submits_for("a red fox, watercolor") == 1


async def test_restart_while_submitting_fails_clearly_without_resubmitting(
    emulator: Emulator, make_manager: ManagerFactory, store: SQLiteJobStore
) -> None:
    orphan = await store.create(new_job(), now=datetime.now(UTC))  # the process died right after this write
    recorder = await started(make_manager())
    failed = await recorder.wait_for(JobFailed, orphan.id)
    assert isinstance(failed, JobFailed)
    assert failed.reason == RESTARTED_WHILE_SUBMITTING
    assert emulator.submits == []


@pytest.mark.parametrize("state", [JobState.IN_QUEUE, JobState.IN_PROGRESS])
async def test_restart_resumes_pending_jobs_and_finishes_them_once(
    emulator: Emulator, make_manager: ManagerFactory, state: JobState
) -> None:
    emulator.config.queue_time = Duration.constant(0.4 if state is JobState.IN_QUEUE else 0.0)
    emulator.config.run_time = Duration.constant(0.8)
    first = make_manager()
    first_events = await started(first)
    job = await first.submit(new_job())
    if state is JobState.IN_PROGRESS:
        await first_events.wait_for(JobRunning, job.id)
    await first.stop()  # the process goes away mid-job
    row = await first.store.get(job.id)
    assert row is not None
    assert row.state is state

    second = make_manager()
    recorder = await started(second)
    await recorder.wait_for(JobCompleted, job.id)
    assert emulator.submits_for("a red fox, watercolor") == 1
    assert len(emulator.submits) == 1


async def test_restart_in_completed_downloads_again(emulator: Emulator, make_manager: ManagerFactory) -> None:
    first = make_manager()
    first_events = await started(first)
    job = await first.submit(new_job())
    await first_events.wait_for(JobCompleted, job.id)
    await first.stop()  # died before delivering

    recorder = await started(make_manager())
    completed = await recorder.wait_for(JobCompleted, job.id)
    assert isinstance(completed, JobCompleted)
    assert completed.image.data.startswith(b"\x89PNG")
    assert len(emulator.submits) == 1


@pytest.mark.parametrize("state", [JobState.DELIVERED, JobState.FAILED, JobState.CANCELLED])
async def test_final_jobs_are_not_resumed(
    emulator: Emulator, make_manager: ManagerFactory, store: SQLiteJobStore, state: JobState
) -> None:
    job = await store.create(new_job(), now=datetime.now(UTC))
    await store.transition(job.id, state, now=datetime.now(UTC))
    manager = make_manager()
    recorder = await started(manager)
    await asyncio.sleep(0.1)
    assert recorder.events == []
    assert manager.pending == 0


async def test_resume_filter_leaves_other_jobs_alone(
    emulator: Emulator, make_manager: ManagerFactory, store: SQLiteJobStore
) -> None:
    await store.create(new_job(), now=datetime.now(UTC))
    manager = make_manager()
    recorder = Recorder()
    manager.subscribe(recorder)
    assert await manager.start(resume=lambda job: False) == 0
    await asyncio.sleep(0.05)
    assert recorder.events == []


async def test_cancel_while_queued_and_too_late(emulator: Emulator, make_manager: ManagerFactory) -> None:
    emulator.config.queue_time = Duration.constant(30.0)
    manager = make_manager()
    recorder = await started(manager)
    queued = await manager.submit(new_job())
    assert await manager.cancel(queued.id) is CancelOutcome.CANCELLED
    cancelled = await recorder.wait_for(JobCancelled, queued.id)
    assert cancelled.job.state is JobState.CANCELLED
    assert cancelled.job.origin.interaction_token is None
    assert await manager.cancel(queued.id) is CancelOutcome.ALREADY_FINISHED

    emulator.config.queue_time = Duration.constant(0.0)
    emulator.config.run_time = Duration.constant(30.0)
    running = await manager.submit(new_job(seed=8))
    await recorder.wait_for(JobRunning, running.id)
    assert await manager.cancel(running.id) is CancelOutcome.TOO_LATE
    assert await manager.cancel(10_000) is CancelOutcome.UNKNOWN_JOB


async def test_cancel_refused_upstream_is_reported_as_too_late(
    emulator: Emulator, make_manager: ManagerFactory
) -> None:
    emulator.config.queue_time = Duration.constant(30.0)
    manager = make_manager(policy=FixedPolicy(10.0))
    await started(manager)
    job = await manager.submit(new_job())
    emulator.inject("cancel", Fault.http(202, {"request_id": job.request_id, "outcome": "not_cancellable"}))
    assert await manager.cancel(job.id) is CancelOutcome.TOO_LATE
    row = await manager.store.get(job.id)
    assert row is not None
    assert row.state is JobState.IN_QUEUE


async def test_upstream_failure_reaches_subscribers_in_plain_words(
    emulator: Emulator, make_manager: ManagerFactory
) -> None:
    emulator.config.failure_rate = 1.0
    emulator.config.failure_message = "NSFW content detected"
    manager = make_manager()
    events = await started(manager)
    job = await manager.submit(new_job())
    failed = await events.wait_for(JobFailed, job.id)
    assert isinstance(failed, JobFailed)
    assert "NSFW" not in failed.reason
    assert failed.job.state is JobState.FAILED
    assert failed.job.error == failed.reason


async def test_transient_errors_are_retried_until_the_job_finishes(
    emulator: Emulator, make_manager: ManagerFactory
) -> None:
    emulator.config.queue_time = Duration.constant(0.1)
    emulator.config.run_time = Duration.constant(0.1)
    emulator.inject("status", Fault.http(503), times=6)  # more than one call's retries
    emulator.inject("result", Fault.http(429, retry_after="0"), times=2)
    manager = make_manager()
    recorder = await started(manager)
    job = await manager.submit(new_job())
    await recorder.wait_for(JobCompleted, job.id)


async def test_expired_request_id_fails_the_job(emulator: Emulator, make_manager: ManagerFactory) -> None:
    emulator.config.queue_time = Duration.constant(30.0)
    manager = make_manager()
    recorder = await started(manager)
    job = await manager.submit(new_job())
    assert job.request_id is not None
    emulator.expire(job.request_id)
    failed = await recorder.wait_for(JobFailed, job.id)
    assert isinstance(failed, JobFailed)
    assert not failed.retryable or "again" in failed.reason


async def test_unknown_state_is_tolerated_for_a_bounded_time(emulator: Emulator, make_manager: ManagerFactory) -> None:
    emulator.config.unknown_state = "warming_up"
    emulator.config.queue_time = Duration.constant(30.0)
    manager = make_manager(unknown_state_timeout=0.3)
    recorder = await started(manager)
    job = await manager.submit(new_job())
    failed = await recorder.wait_for(JobFailed, job.id)
    assert isinstance(failed, JobFailed)
    assert "state" in failed.reason


async def test_job_timeout_gives_up_and_cancels_upstream(emulator: Emulator, make_manager: ManagerFactory) -> None:
    emulator.config.queue_time = Duration.constant(30.0)
    manager = make_manager(job_timeout=0.3)
    recorder = await started(manager)
    job = await manager.submit(new_job())
    failed = await recorder.wait_for(JobFailed, job.id)
    assert isinstance(failed, JobFailed)
    assert "gave up" in failed.reason
    assert job.request_id is not None
    assert emulator.jobs[job.request_id].cancelled_at is not None


async def test_submit_refusals_fail_the_job_without_polling(emulator: Emulator, make_manager: ManagerFactory) -> None:
    emulator.inject("submit", Fault.error_code(400002, message="insufficient balance"))
    manager = make_manager()
    recorder = await started(manager)
    job = await manager.submit(new_job())
    failed = await recorder.wait_for(JobFailed, job.id)
    assert isinstance(failed, JobFailed)
    assert "out of credit" in failed.reason
    assert manager.pending == 0


async def test_many_pending_jobs_share_one_scheduler_task(emulator: Emulator, make_manager: ManagerFactory) -> None:
    emulator.config.queue_time = Duration.constant(60.0)
    manager = make_manager(policy=FixedPolicy(5.0))
    await started(manager)
    before = len(asyncio.all_tasks())
    for seed in range(200):
        await manager.submit(new_job(seed=seed))
    assert manager.pending == 200
    assert len(asyncio.all_tasks()) - before <= 2


async def test_adaptive_policy_learns_from_stored_history(
    emulator: Emulator, client: RunComfyClient, store: SQLiteJobStore
) -> None:
    now = datetime.now(UTC)
    for index in range(len(PRIORS[MODEL].run)):  # as many as the shipped prior has points: it is then replaced
        job = await store.create(new_job(seed=index), now=now)
        await store.transition(job.id, JobState.IN_QUEUE, now=now)
        await store.transition(job.id, JobState.IN_PROGRESS, now=now + timedelta(seconds=1))
        await store.transition(job.id, JobState.COMPLETED, now=now + timedelta(seconds=9))
        await store.transition(job.id, JobState.DELIVERED, now=now + timedelta(seconds=9))
    manager = JobManager(client, store, model=MODEL)
    await manager.start()
    try:
        running = await store.create(new_job(seed=99), now=now)
        running = await store.transition(running.id, JobState.IN_PROGRESS, now=now)
        assert manager.eta(running) == now + timedelta(seconds=8)
    finally:
        await manager.stop()
