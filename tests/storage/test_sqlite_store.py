"""SQLiteJobStore against real database files in tmp_path."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from storage.base import JobNotFoundError
from storage.models import Job, JobOrigin, JobState, NewJob, Timing
from storage.sqlite import _UNFINISHED_SQL, SQLiteJobStore, StoreUnavailableError

ANY = tuple(JobState)  # the tests move jobs freely; the manager always names the state it expects

REPO_ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TOKEN = "interaction-token-do-not-leak"
SNOWFLAKE = 2**63 - 1  # the largest id SQLite's INTEGER holds; Discord's are below it
ORIGIN = JobOrigin(
    guild_id=SNOWFLAKE,
    channel_id=SNOWFLAKE - 1,
    user_id=SNOWFLAKE - 2,
    message_id=None,
    application_id=SNOWFLAKE - 4,
    interaction_token=TOKEN,
    token_expires_at=T0 + timedelta(minutes=15),
    filesize_limit=25 * 1024 * 1024,
)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def file_bytes(path: Path) -> bytes:
    return path.read_bytes()


def new_job(prompt: str = "a red fox, watercolor", *, model: str = "imagineart-1.5", **kwargs: object) -> NewJob:
    return NewJob(model=model, prompt=prompt, aspect_ratio="16:9", seed=7, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "jobs.sqlite3"  # "data" does not exist yet: open() creates it


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SQLiteJobStore]:
    store = await SQLiteJobStore.open(db_path)
    yield store
    await store.close()


async def test_every_field_and_the_origin_round_trip(store: SQLiteJobStore) -> None:
    parent = await store.create(new_job("parent"), now=at(0))
    created = await store.create(new_job(origin=ORIGIN, parent_id=parent.id), now=at(1))
    assert created == Job(
        id=created.id,
        model="imagineart-1.5",
        prompt="a red fox, watercolor",
        aspect_ratio="16:9",
        seed=7,
        state=JobState.SUBMITTING,
        origin=ORIGIN,
        created_at=at(1),
        updated_at=at(1),
        parent_id=parent.id,
    )

    fields = {
        "request_id": "req-123",
        "queue_position": 4,
        "queued_at": at(2),
        "started_at": at(3),
        "finished_at": at(5),
        "next_poll_at": at(6),
        "poll_count": 9,
        "result_url": "https://example.invalid/fox.png",
        "error": "none really",
        "cost_usd": 0.0125,
        "cost_estimated": True,
        "delivery": "channel_edit",
        "lease_owner": "host-1:42",
        "lease_until": at(60),
        "message_id": SNOWFLAKE - 3,
        "interaction_token": TOKEN + "-2",
        "token_expires_at": at(900),
        "filesize_limit": 10 * 1024 * 1024,
    }
    moved = await store.transition(created.id, JobState.COMPLETED, expect=ANY, now=at(4), **fields)
    origin_fields = {name: fields.pop(name) for name in ("message_id", "interaction_token", "token_expires_at")}
    origin_fields["filesize_limit"] = fields.pop("filesize_limit")
    expected = dataclasses.replace(
        created,
        state=JobState.COMPLETED,
        updated_at=at(4),
        completed_at=at(4),
        origin=dataclasses.replace(ORIGIN, **origin_fields),  # type: ignore[arg-type]
        **fields,  # type: ignore[arg-type]
    )
    assert moved == expected
    assert await store.get(created.id) == expected
    assert moved.origin.interaction_token == TOKEN + "-2"
    assert TOKEN not in repr(moved)
    assert TOKEN not in str(moved)
    assert TOKEN not in repr(await store.get(created.id))


async def test_get_unknown_job_is_none(store: SQLiteJobStore) -> None:
    assert await store.get(12345) is None


async def test_timestamps_come_back_aware_utc(store: SQLiteJobStore) -> None:
    india = timezone(timedelta(hours=5, minutes=30))
    local = datetime(2025, 3, 1, 17, 30, 0, 123456, tzinfo=india)
    job = await store.create(new_job(origin=ORIGIN), now=local)
    job = await store.transition(job.id, JobState.IN_QUEUE, expect=ANY, now=local + timedelta(seconds=1))
    stored = await store.get(job.id)
    assert stored is not None
    for value in (stored.created_at, stored.updated_at, stored.queued_at, stored.origin.token_expires_at):
        assert value is not None
        assert value.tzinfo is UTC
    assert stored.created_at == local
    assert stored.created_at.hour == 12
    assert stored.created_at.microsecond == 123456


async def test_naive_datetimes_are_refused(store: SQLiteJobStore) -> None:
    naive = datetime(2025, 3, 1, 12, 0)  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.create(new_job(), now=naive)
    job = await store.create(new_job(), now=at(0))
    with pytest.raises(ValueError, match="next_poll_at"):
        await store.update(job.id, now=at(1), next_poll_at=naive)
    with pytest.raises(TypeError, match="next_poll_at"):
        await store.update(job.id, now=at(1), next_poll_at="soon")


async def test_transition_stamps_the_state_it_enters_and_never_created_at(store: SQLiteJobStore) -> None:
    job = await store.create(new_job(), now=at(0))
    again = await store.transition(job.id, JobState.SUBMITTING, expect=ANY, now=at(1))
    assert again.created_at == at(0)
    assert again.updated_at == at(1)

    queued = await store.transition(job.id, JobState.IN_QUEUE, expect=ANY, now=at(2), queue_position=5)
    assert queued.queued_at == at(2)
    repeated = await store.transition(job.id, JobState.IN_QUEUE, expect=ANY, now=at(3), queue_position=2)
    assert repeated.queued_at == at(2), "a repeated transition keeps the time the state was entered"
    assert repeated.queue_position == 2
    assert repeated.updated_at == at(3)

    started = await store.transition(job.id, JobState.IN_PROGRESS, expect=ANY, now=at(4), started_at=at(3.5))
    assert started.started_at == at(3.5), "an explicit field wins over the stamp"
    requeued = await store.transition(job.id, JobState.IN_QUEUE, expect=ANY, now=at(5))
    assert requeued.queued_at == at(5), "entering the state again stamps it again"
    failed = await store.transition(job.id, JobState.FAILED, expect=ANY, now=at(6), error="boom")
    assert (failed.finished_at, failed.error, failed.created_at) == (at(6), "boom", at(0))


async def test_unknown_or_fixed_fields_raise_type_error_and_write_nothing(store: SQLiteJobStore) -> None:
    job = await store.create(new_job(), now=at(0))
    with pytest.raises(TypeError, match="colour"):
        await store.transition(job.id, JobState.IN_QUEUE, expect=ANY, now=at(1), colour="red")
    with pytest.raises(TypeError, match="model"):
        await store.update(job.id, now=at(1), model="other")
    with pytest.raises(TypeError, match="state"):
        await store.update(job.id, now=at(1), state="failed")
    with pytest.raises(TypeError, match="DROP TABLE"):
        await store.update(job.id, now=at(1), **{"id = 0; DROP TABLE jobs; --": 1})
    assert await store.get(job.id) == job


async def test_fields_can_be_cleared_to_none(store: SQLiteJobStore) -> None:
    job = await store.create(new_job(origin=ORIGIN), now=at(0))
    job = await store.transition(job.id, JobState.IN_QUEUE, expect=ANY, now=at(1), queue_position=3, request_id="r")
    done = await store.transition(
        job.id,
        JobState.DELIVERED,
        expect=ANY,
        now=at(2),
        interaction_token=None,
        queue_position=None,
        delivery="interaction",
    )
    assert done.origin.interaction_token is None
    assert done.queue_position is None
    assert done.request_id == "r"
    assert (await store.get(job.id)) == done


async def test_writes_to_an_unknown_job_change_nothing_and_say_so(store: SQLiteJobStore) -> None:
    assert await store.transition(999, JobState.FAILED, expect=ANY, now=at(0)) is None
    assert await store.update(999, now=at(0), poll_count=1) is None
    with pytest.raises(JobNotFoundError, match="parent job 999"):
        await store.create(new_job(parent_id=999), now=at(0))
    assert await store.count_by_state() == dict.fromkeys(JobState, 0)


async def test_transition_is_a_compare_and_set_on_the_state(store: SQLiteJobStore) -> None:
    job = await store.create(new_job(), now=at(0))
    queued = await store.transition(job.id, JobState.IN_QUEUE, expect=JobState.SUBMITTING, now=at(1), request_id="r")
    assert queued is not None
    assert queued.state is JobState.IN_QUEUE
    # A second step that still believes the job is submitting loses: nothing it asked for is written.
    late = await store.transition(job.id, JobState.FAILED, expect=JobState.SUBMITTING, now=at(2), error="stale")
    assert late is None
    assert await store.get(job.id) == queued
    assert await store.update(job.id, now=at(3), expect=JobState.IN_PROGRESS, queue_position=9) is None
    moved = await store.update(job.id, now=at(3), expect=(JobState.IN_QUEUE, JobState.IN_PROGRESS), queue_position=9)
    assert moved is not None
    assert moved.queue_position == 9


async def test_two_racing_transitions_only_one_wins(store: SQLiteJobStore) -> None:
    job = await store.create(new_job(), now=at(0), state=JobState.WAITING)
    results = await asyncio.gather(
        *(store.transition(job.id, JobState.SUBMITTING, expect=JobState.WAITING, now=at(1)) for _ in range(5)),
        store.transition(job.id, JobState.CANCELLED, expect=JobState.WAITING, now=at(1)),
    )
    assert sum(result is not None for result in results) == 1


async def test_update_keeps_the_state(store: SQLiteJobStore) -> None:
    job = await store.create(new_job(), now=at(0))
    job = await store.transition(job.id, JobState.IN_QUEUE, expect=ANY, now=at(1))
    updated = await store.update(job.id, now=at(2), poll_count=1, next_poll_at=at(3))
    assert (updated.state, updated.queued_at, updated.updated_at) == (JobState.IN_QUEUE, at(1), at(2))
    assert (updated.poll_count, updated.next_poll_at) == (1, at(3))


async def test_ids_are_never_reused(store: SQLiteJobStore, db_path: Path) -> None:
    first = await store.create(new_job(), now=at(0))
    second = await store.create(new_job(), now=at(1))
    with sqlite3.connect(db_path) as raw:
        raw.execute("DELETE FROM jobs WHERE id = ?", (second.id,))
    raw.close()
    third = await store.create(new_job(), now=at(2))
    assert (first.id, second.id, third.id) == (1, 2, 3)


async def test_unfinished_lists_live_jobs_oldest_first(store: SQLiteJobStore) -> None:
    # Created out of id order on purpose: the order is by creation time.
    late = await store.create(new_job("late"), now=at(30))
    early = await store.create(new_job("early"), now=at(10))
    middle = await store.create(new_job("middle"), now=at(20))
    await store.transition(middle.id, JobState.IN_PROGRESS, expect=ANY, now=at(31))
    for state, when in ((JobState.DELIVERED, 32), (JobState.FAILED, 33), (JobState.CANCELLED, 34)):
        done = await store.create(new_job(state.value), now=at(when - 30))
        await store.transition(done.id, state, expect=ANY, now=at(when))
    completed = await store.create(new_job("completed, not yet delivered"), now=at(40))
    await store.transition(completed.id, JobState.COMPLETED, expect=ANY, now=at(41))

    assert [job.prompt for job in await store.unfinished()] == [
        "early",
        "middle",
        "late",
        "completed, not yet delivered",
    ]
    assert [job.id for job in await store.unfinished()] == [early.id, middle.id, late.id, completed.id]


async def test_unfinished_query_uses_the_partial_index(store: SQLiteJobStore, db_path: Path) -> None:
    # Guards against FINAL_STATES and the index in 0001_jobs.sql drifting apart.
    with sqlite3.connect(db_path) as raw:
        plan = " ".join(str(row) for row in raw.execute("EXPLAIN QUERY PLAN " + _UNFINISHED_SQL))
    raw.close()
    assert "jobs_unfinished" in plan


async def complete(
    store: SQLiteJobStore, model: str, created: float, queued: float, started: float, done: float
) -> Job:
    job = await store.create(new_job(model=model), now=at(created))
    await store.transition(job.id, JobState.IN_QUEUE, expect=ANY, now=at(queued))
    await store.transition(job.id, JobState.IN_PROGRESS, expect=ANY, now=at(started))
    return await store.transition(job.id, JobState.COMPLETED, expect=ANY, now=at(done))


async def test_recent_timings_newest_first_with_the_right_math(store: SQLiteJobStore) -> None:
    await complete(store, "fox", 0, 1, 4, 10)  # queue 3, run 6
    await complete(store, "fox", 20, 21, 21.5, 30.25)  # queue 0.5, run 8.75
    await complete(store, "other-model", 40, 41, 50, 60)
    delivered = await complete(store, "fox", 60, 61, 63, 64)  # queue 2, run 1
    await store.transition(delivered.id, JobState.DELIVERED, expect=ANY, now=at(65))

    never_started = await store.create(new_job(model="fox"), now=at(70))
    await store.transition(never_started.id, JobState.IN_QUEUE, expect=ANY, now=at(71))
    await store.transition(never_started.id, JobState.COMPLETED, expect=ANY, now=at(72))  # no started_at
    unfinished = await store.create(new_job(model="fox"), now=at(80))
    await store.transition(unfinished.id, JobState.IN_PROGRESS, expect=ANY, now=at(81))
    backwards = await complete(store, "fox", 90, 91, 92, 93)
    await store.update(backwards.id, now=at(94), queued_at=at(95))  # re-queued after it started

    assert await store.recent_timings("fox") == [Timing(2, 1), Timing(0.5, 8.75), Timing(3, 6)]
    assert await store.recent_timings("fox", limit=2) == [Timing(2, 1), Timing(0.5, 8.75)]
    assert await store.recent_timings("unknown") == []


async def test_by_request_id(store: SQLiteJobStore) -> None:
    job = await store.create(new_job(), now=at(0))
    await store.create(new_job(), now=at(1))
    job = await store.transition(job.id, JobState.IN_QUEUE, expect=ANY, now=at(2), request_id="req-a")
    assert await store.by_request_id("req-a") == job
    assert await store.by_request_id("req-missing") is None


async def test_by_message_id(store: SQLiteJobStore) -> None:
    job = await store.create(new_job(origin=ORIGIN), now=at(0))
    await store.create(new_job(), now=at(1))
    job = await store.update(job.id, now=at(2), message_id=SNOWFLAKE - 10)
    assert await store.by_message_id(SNOWFLAKE - 10) == job
    assert await store.by_message_id(SNOWFLAKE - 11) is None


async def test_count_by_state_includes_zeros(store: SQLiteJobStore) -> None:
    for _ in range(2):
        await store.create(new_job(), now=at(0))
    job = await store.create(new_job(), now=at(0))
    await store.transition(job.id, JobState.FAILED, expect=ANY, now=at(1))
    counts = await store.count_by_state()
    assert counts[JobState.SUBMITTING] == 2
    assert counts[JobState.FAILED] == 1
    assert counts[JobState.DELIVERED] == 0
    assert set(counts) == set(JobState)


async def test_jobs_for_user_newest_first_within_a_guild_or_everywhere(store: SQLiteJobStore) -> None:
    def origin(guild_id: int | None, user_id: int) -> JobOrigin:
        return JobOrigin(guild_id=guild_id, user_id=user_id)

    a1 = await store.create(new_job("a1", origin=origin(1, 100)), now=at(1))
    await store.create(new_job("other user", origin=origin(1, 200)), now=at(2))
    b1 = await store.create(new_job("b1", origin=origin(2, 100)), now=at(3))
    a2 = await store.create(new_job("a2", origin=origin(1, 100)), now=at(4))
    dm = await store.create(new_job("dm", origin=origin(None, 100)), now=at(5))

    assert [j.id for j in await store.jobs_for_user(100)] == [dm.id, a2.id, b1.id, a1.id]
    assert [j.id for j in await store.jobs_for_user(100, guild_id=1)] == [a2.id, a1.id]
    assert [j.id for j in await store.jobs_for_user(100, limit=2)] == [dm.id, a2.id]
    assert await store.jobs_for_user(300) == []


async def test_children_are_the_rerolls_oldest_first(store: SQLiteJobStore) -> None:
    parent = await store.create(new_job(), now=at(0))
    first = await store.create(new_job(parent_id=parent.id), now=at(1))
    second = await store.create(new_job(parent_id=parent.id), now=at(2))
    await store.create(new_job(parent_id=first.id), now=at(3))
    assert [j.id for j in await store.children(parent.id)] == [first.id, second.id]
    assert await store.children(second.id) == []


async def test_leases_between_two_owners(store: SQLiteJobStore) -> None:
    job = await store.create(new_job(), now=at(0))
    assert await store.acquire_lease(job.id, "a", until=at(30), now=at(0))
    assert not await store.acquire_lease(job.id, "b", until=at(40), now=at(10))
    assert await store.acquire_lease(job.id, "a", until=at(60), now=at(20)), "the holder renews"
    assert not await store.acquire_lease(job.id, "b", until=at(90), now=at(59))
    assert await store.acquire_lease(job.id, "b", until=at(90), now=at(61)), "an expired lease is free"
    assert not await store.acquire_lease(job.id, "a", until=at(120), now=at(62))
    held = await store.get(job.id)
    assert held is not None
    assert (held.lease_owner, held.lease_until, held.updated_at) == ("b", at(90), at(0))

    assert not await store.release_lease(job.id, "a")
    assert await store.release_lease(job.id, "b")
    assert await store.acquire_lease(job.id, "a", until=at(120), now=at(63)), "a released lease is free"
    assert not await store.acquire_lease(404, "a", until=at(120), now=at(63))


async def test_concurrent_writers_on_one_connection_do_not_collide(store: SQLiteJobStore) -> None:
    jobs = await asyncio.gather(*(store.create(new_job(str(n)), now=at(n)) for n in range(20)))
    await asyncio.gather(*(store.transition(job.id, JobState.IN_QUEUE, expect=ANY, now=at(30)) for job in jobs))
    assert (await store.count_by_state())[JobState.IN_QUEUE] == 20


async def test_async_with_closes_the_store(db_path: Path) -> None:
    async with await SQLiteJobStore.open(db_path) as store:
        await store.create(new_job(), now=at(0))
    with pytest.raises(ValueError, match="closed"):
        await store.get(1)
    await store.close()  # closing twice is harmless


async def test_wal_mode_is_on(store: SQLiteJobStore, db_path: Path) -> None:
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    raw.close()


async def test_connection_pragmas_keep_the_durability_promise(store: SQLiteJobStore) -> None:
    # Per-connection settings, so they can only be read through the store's own connection.
    async def pragma(name: str) -> object:
        rows = list(await store._db.execute_fetchall(f"PRAGMA {name}"))
        return rows[0][0]

    assert await pragma("synchronous") == 2  # FULL
    assert await pragma("foreign_keys") == 1
    assert await pragma("busy_timeout") == 5000


async def test_a_write_is_on_disk_when_the_method_returns(db_path: Path) -> None:
    first = await SQLiteJobStore.open(db_path)
    try:
        job = await first.create(new_job(origin=ORIGIN), now=at(0))
        job = await first.transition(job.id, JobState.IN_QUEUE, expect=ANY, now=at(1), request_id="req-1")
        # The first store is still open: nothing was flushed by closing it.
        second = await SQLiteJobStore.open(db_path)
        try:
            assert await second.get(job.id) == job
        finally:
            await second.close()
        with sqlite3.connect(db_path) as raw:
            assert raw.execute("SELECT state FROM jobs WHERE id = ?", (job.id,)).fetchone() == ("in_queue",)
        raw.close()
    finally:
        await first.close()
    async with await SQLiteJobStore.open(db_path) as reopened:
        assert await reopened.get(job.id) == job


CRASHING_WRITER = """
import asyncio, os, signal, sys
from datetime import UTC, datetime
from pathlib import Path
from storage.models import JobOrigin, JobState, NewJob
from storage.sqlite import SQLiteJobStore

async def main():
    store = await SQLiteJobStore.open(Path(sys.argv[1]))
    job = await store.create(NewJob("m", "crash", "1:1", 1, JobOrigin(interaction_token="t")), now=datetime.now(UTC))
    now = datetime.now(UTC)
    await store.transition(job.id, JobState.IN_QUEUE, expect=JobState.SUBMITTING, now=now, request_id="req-crash")
    print(job.id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


async def test_a_write_survives_the_process_being_killed(db_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASHING_WRITER, str(db_path), cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE
    )
    stdout, _ = await process.communicate()
    assert process.returncode == -signal.SIGKILL
    job_id = int(stdout)
    assert db_path.with_name(db_path.name + "-wal").stat().st_size > 0, "the rows live in the WAL, never checkpointed"

    async with await SQLiteJobStore.open(db_path) as store:
        job = await store.by_request_id("req-crash")
        assert job is not None
        assert (job.id, job.state, job.origin.interaction_token) == (job_id, JobState.IN_QUEUE, "t")


async def test_read_only_store_reads_but_refuses_writes(db_path: Path) -> None:
    async with await SQLiteJobStore.open(db_path) as store:
        job = await store.create(new_job(), now=at(0))
    before = file_bytes(db_path)

    async with await SQLiteJobStore.open(db_path, read_only=True) as readonly:
        assert readonly.read_only
        assert await readonly.get(job.id) == job
        with pytest.raises(StoreUnavailableError, match="readonly") as caught:
            await readonly.create(new_job(), now=at(1))
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
        assert caught.value.path == db_path
        with pytest.raises(StoreUnavailableError):
            await readonly.transition(job.id, JobState.FAILED, expect=ANY, now=at(1))
        with pytest.raises(StoreUnavailableError):
            await readonly.acquire_lease(job.id, "a", until=at(9), now=at(1))
    assert file_bytes(db_path) == before


async def test_opening_a_missing_file_read_only_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailableError, match="unable to open"):
        await SQLiteJobStore.open(tmp_path / "missing.sqlite3", read_only=True)
    assert not (tmp_path / "missing.sqlite3").exists()


async def test_a_locked_database_is_unavailable_not_lost(db_path: Path) -> None:
    async with await SQLiteJobStore.open(db_path, busy_timeout_ms=50) as store:
        blocker = sqlite3.connect(db_path, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreUnavailableError, match="locked"):
                await store.create(new_job(), now=at(0))
            blocker.execute("ROLLBACK")
        finally:
            blocker.close()
        job = await store.create(new_job(), now=at(1))
        assert job.id == 1
