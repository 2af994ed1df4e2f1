"""The JobStore's behaviour, the same on both backends: each test runs against SQLite and PostgreSQL.

The `store` fixture (tests/storage/conftest.py) is a SQLite file in tmp_path or
a fresh PostgreSQL database; what only one backend has (pragmas, WAL, files,
pools) is tested in test_sqlite_file.py and test_postgres_store.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from storage.base import JobNotFoundError
from storage.models import FailureKind, Job, JobOrigin, JobState, Lease, NewJob, Timing
from storage.open import AnyJobStore

ANY = tuple(JobState)  # the tests move jobs freely; the manager always names the state it expects
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TOKEN = "interaction-token-do-not-leak"
SNOWFLAKE = 2**63 - 1  # the largest signed 64-bit id (SQLite INTEGER, PostgreSQL BIGINT); Discord's are below it
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


def new_job(prompt: str = "a red fox, watercolor", *, model: str = "imagineart-1.5", **kwargs: object) -> NewJob:
    return NewJob(model=model, prompt=prompt, aspect_ratio="16:9", seed=7, **kwargs)  # type: ignore[arg-type]


async def test_every_field_and_the_origin_round_trip(store: AnyJobStore) -> None:
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

    fields: dict[str, Any] = {  # the store takes its columns as keyword arguments of any type
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
        origin=dataclasses.replace(ORIGIN, **origin_fields),
        **fields,
    )
    assert moved is not None
    assert moved == expected
    assert await store.get(created.id) == expected
    assert moved.origin.interaction_token == TOKEN + "-2"
    assert TOKEN not in repr(moved)
    assert TOKEN not in str(moved)
    assert TOKEN not in repr(await store.get(created.id))


async def test_the_delivery_stage_round_trips(store: AnyJobStore) -> None:
    job = await store.create(new_job(exempt=True), now=at(0), post_nonce="nonce-1")
    assert (job.exempt, job.post_nonce, job.delivery_attempts, job.failure_kind) == (True, "nonce-1", 0, None)
    made = await store.transition(job.id, JobState.COMPLETED, expect=JobState.SUBMITTING, now=at(1))
    owed: dict[str, Any] = {"deliver_at": at(3), "delivery_attempts": 1, "delivery_error": "Discord answered 503"}
    delivering = await store.transition(job.id, JobState.DELIVERING, expect=JobState.COMPLETED, now=at(2), **owed)
    assert made is not None
    expected = dataclasses.replace(made, state=JobState.DELIVERING, updated_at=at(2), **owed)
    assert delivering == expected, "delivering has no stamp of its own"
    failed = await store.transition(job.id, JobState.FAILED, expect=ANY, now=at(4), failure_kind=FailureKind.REFUSED)
    assert failed is not None
    assert failed.failure_kind is FailureKind.REFUSED
    assert (await store.get(job.id)) == failed
    with pytest.raises(ValueError, match="'sometimes'"):
        await store.update(job.id, now=at(5), failure_kind="sometimes")
    with pytest.raises(TypeError, match="exempt"):
        await store.update(job.id, now=at(5), exempt=False)  # what the job is never changes
    with pytest.raises(TypeError, match="post_nonce"):
        await store.update(job.id, now=at(5), post_nonce="another")


async def test_owing_delivery_is_soonest_first_and_only_what_is_owed(store: AnyJobStore) -> None:
    ids = [(await store.create(new_job(str(n)), now=at(n))).id for n in range(4)]
    await store.update(ids[0], now=at(5), deliver_at=at(20))
    await store.update(ids[1], now=at(5), deliver_at=at(10))
    await store.update(ids[2], now=at(5), deliver_at=at(10))
    await store.update(ids[3], now=at(5), deliver_at=at(1))
    await store.update(ids[3], now=at(6), deliver_at=None)  # delivered: nothing owed
    assert [job.id for job in await store.owing_delivery()] == [ids[1], ids[2], ids[0]]


async def test_get_unknown_job_is_none(store: AnyJobStore) -> None:
    assert await store.get(12345) is None


async def test_timestamps_come_back_aware_utc(store: AnyJobStore) -> None:
    india = timezone(timedelta(hours=5, minutes=30))
    local = datetime(2025, 3, 1, 17, 30, 0, 123456, tzinfo=india)
    job = await store.create(new_job(origin=ORIGIN), now=local)
    queued = await store.transition(job.id, JobState.IN_QUEUE, expect=ANY, now=local + timedelta(seconds=1))
    assert queued is not None
    stored = await store.get(queued.id)
    assert stored is not None
    for value in (stored.created_at, stored.updated_at, stored.queued_at, stored.origin.token_expires_at):
        assert value is not None
        assert value.tzinfo is UTC
    assert stored.created_at == local
    assert stored.created_at.hour == 12
    assert stored.created_at.microsecond == 123456


async def test_naive_datetimes_are_refused(store: AnyJobStore) -> None:
    naive = datetime(2025, 3, 1, 12, 0)  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.create(new_job(), now=naive)
    job = await store.create(new_job(), now=at(0))
    with pytest.raises(ValueError, match="next_poll_at"):
        await store.update(job.id, now=at(1), next_poll_at=naive)
    with pytest.raises(TypeError, match="next_poll_at"):
        await store.update(job.id, now=at(1), next_poll_at="soon")


async def test_transition_stamps_the_state_it_enters_and_never_created_at(store: AnyJobStore) -> None:
    job = await store.create(new_job(), now=at(0))
    again = await store.transition(job.id, JobState.SUBMITTING, expect=ANY, now=at(1))
    assert again is not None
    assert again.created_at == at(0)
    assert again.updated_at == at(1)

    queued = await store.transition(job.id, JobState.IN_QUEUE, expect=ANY, now=at(2), queue_position=5)
    assert queued is not None
    assert queued.queued_at == at(2)
    repeated = await store.transition(job.id, JobState.IN_QUEUE, expect=ANY, now=at(3), queue_position=2)
    assert repeated is not None
    assert repeated.queued_at == at(2), "a repeated transition keeps the time the state was entered"
    assert repeated.queue_position == 2
    assert repeated.updated_at == at(3)

    started = await store.transition(job.id, JobState.IN_PROGRESS, expect=ANY, now=at(4), started_at=at(3.5))
    assert started is not None
    assert started.started_at == at(3.5), "an explicit field wins over the stamp"
    requeued = await store.transition(job.id, JobState.IN_QUEUE, expect=ANY, now=at(5))
    assert requeued is not None
    assert requeued.queued_at == at(5), "entering the state again stamps it again"
    failed = await store.transition(job.id, JobState.FAILED, expect=ANY, now=at(6), error="boom")
    assert failed is not None
    assert (failed.finished_at, failed.error, failed.created_at) == (at(6), "boom", at(0))


async def test_unknown_or_fixed_fields_raise_type_error_and_write_nothing(store: AnyJobStore) -> None:
    job = await store.create(new_job(), now=at(0))
    with pytest.raises(TypeError, match="colour"):
        await store.transition(job.id, JobState.IN_QUEUE, expect=ANY, now=at(1), colour="red")
    with pytest.raises(TypeError, match="model"):
        await store.update(job.id, now=at(1), model="other")
    with pytest.raises(TypeError, match="state"):
        await store.update(job.id, now=at(1), state="failed")
    hostile: dict[str, Any] = {"id = 0; DROP TABLE jobs; --": 1}  # a column name no keyword could spell
    with pytest.raises(TypeError, match="DROP TABLE"):
        await store.update(job.id, now=at(1), **hostile)
    assert await store.get(job.id) == job


async def test_fields_can_be_cleared_to_none(store: AnyJobStore) -> None:
    job = await store.create(new_job(origin=ORIGIN), now=at(0))
    queued = await store.transition(job.id, JobState.IN_QUEUE, expect=ANY, now=at(1), queue_position=3, request_id="r")
    assert queued is not None
    done = await store.transition(
        queued.id,
        JobState.DELIVERED,
        expect=ANY,
        now=at(2),
        interaction_token=None,
        queue_position=None,
        delivery="interaction",
    )
    assert done is not None
    assert done.origin.interaction_token is None
    assert done.queue_position is None
    assert done.request_id == "r"
    assert (await store.get(queued.id)) == done


async def test_writes_to_an_unknown_job_change_nothing_and_say_so(store: AnyJobStore) -> None:
    assert await store.transition(999, JobState.FAILED, expect=ANY, now=at(0)) is None
    assert await store.update(999, now=at(0), poll_count=1) is None
    with pytest.raises(JobNotFoundError, match="parent job 999"):
        await store.create(new_job(parent_id=999), now=at(0))
    assert await store.count_by_state() == dict.fromkeys(JobState, 0)


async def test_transition_is_a_compare_and_set_on_the_state(store: AnyJobStore) -> None:
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


async def test_two_racing_transitions_only_one_wins(store: AnyJobStore) -> None:
    job = await store.create(new_job(), now=at(0), state=JobState.WAITING)
    results = await asyncio.gather(
        *(store.transition(job.id, JobState.SUBMITTING, expect=JobState.WAITING, now=at(1)) for _ in range(5)),
        store.transition(job.id, JobState.CANCELLED, expect=JobState.WAITING, now=at(1)),
    )
    assert sum(result is not None for result in results) == 1


async def test_update_keeps_the_state(store: AnyJobStore) -> None:
    job = await store.create(new_job(), now=at(0))
    queued = await store.transition(job.id, JobState.IN_QUEUE, expect=ANY, now=at(1))
    assert queued is not None
    updated = await store.update(queued.id, now=at(2), poll_count=1, next_poll_at=at(3))
    assert updated is not None
    assert (updated.state, updated.queued_at, updated.updated_at) == (JobState.IN_QUEUE, at(1), at(2))
    assert (updated.poll_count, updated.next_poll_at) == (1, at(3))


async def test_unfinished_lists_live_jobs_oldest_first(store: AnyJobStore) -> None:
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


async def complete(store: AnyJobStore, model: str, created: float, queued: float, started: float, done: float) -> Job:
    job = await store.create(new_job(model=model), now=at(created))
    await store.transition(job.id, JobState.IN_QUEUE, expect=ANY, now=at(queued))
    await store.transition(job.id, JobState.IN_PROGRESS, expect=ANY, now=at(started))
    completed = await store.transition(job.id, JobState.COMPLETED, expect=ANY, now=at(done))
    assert completed is not None
    return completed


async def test_recent_timings_newest_first_with_the_right_math(store: AnyJobStore) -> None:
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


async def test_by_request_id(store: AnyJobStore) -> None:
    job = await store.create(new_job(), now=at(0))
    await store.create(new_job(), now=at(1))
    queued = await store.transition(job.id, JobState.IN_QUEUE, expect=ANY, now=at(2), request_id="req-a")
    assert queued is not None
    assert await store.by_request_id("req-a") == queued
    assert await store.by_request_id("req-missing") is None


async def test_by_message_id(store: AnyJobStore) -> None:
    job = await store.create(new_job(origin=ORIGIN), now=at(0))
    await store.create(new_job(), now=at(1))
    updated = await store.update(job.id, now=at(2), message_id=SNOWFLAKE - 10)
    assert updated is not None
    assert await store.by_message_id(SNOWFLAKE - 10) == updated
    assert await store.by_message_id(SNOWFLAKE - 11) is None


async def test_count_by_state_includes_zeros(store: AnyJobStore) -> None:
    for _ in range(2):
        await store.create(new_job(), now=at(0))
    job = await store.create(new_job(), now=at(0))
    await store.transition(job.id, JobState.FAILED, expect=ANY, now=at(1))
    counts = await store.count_by_state()
    assert counts[JobState.SUBMITTING] == 2
    assert counts[JobState.FAILED] == 1
    assert counts[JobState.DELIVERED] == 0
    assert set(counts) == set(JobState)


async def test_jobs_for_user_newest_first_within_a_guild_or_everywhere(store: AnyJobStore) -> None:
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


async def test_children_are_the_rerolls_oldest_first(store: AnyJobStore) -> None:
    parent = await store.create(new_job(), now=at(0))
    first = await store.create(new_job(parent_id=parent.id), now=at(1))
    second = await store.create(new_job(parent_id=parent.id), now=at(2))
    await store.create(new_job(parent_id=first.id), now=at(3))
    assert [j.id for j in await store.children(parent.id)] == [first.id, second.id]
    assert await store.children(second.id) == []


async def test_a_write_naming_an_owner_needs_its_lease(store: AnyJobStore) -> None:
    """Every write of the job manager names its process when processes share the database: one that lost the
    job to another process changes nothing."""
    job = await store.create(new_job(), now=at(0), state=JobState.WAITING, lease=Lease("a", at(30)))
    assert (job.lease_owner, job.lease_until) == ("a", at(30))
    assert await store.transition(job.id, JobState.SUBMITTING, expect=JobState.WAITING, now=at(1), owner="b") is None
    assert await store.update(job.id, now=at(1), expect=None, owner="b", queue_position=3) is None
    unchanged = await store.get(job.id)
    assert unchanged is not None
    assert (unchanged.state, unchanged.queue_position, unchanged.updated_at) == (JobState.WAITING, None, at(0))

    moved = await store.transition(job.id, JobState.SUBMITTING, expect=JobState.WAITING, now=at(2), owner="a")
    assert moved is not None
    assert moved.state is JobState.SUBMITTING
    noted = await store.update(job.id, now=at(3), expect=JobState.SUBMITTING, owner="a", queue_position=2)
    assert noted is not None
    assert noted.queue_position == 2
    # Without an owner (one process, or a fact such as "the reply was deleted") the lease is not looked at.
    assert await store.update(job.id, now=at(4), expect=None, deleted_at=at(4)) is not None


async def test_once_lets_one_caller_through_per_window(store: AnyJobStore) -> None:
    window = timedelta(seconds=10)
    assert await store.once("reroll:1:2", now=at(0), window=window)
    assert not await store.once("reroll:1:2", now=at(5), window=window), "within the window"
    assert await store.once("reroll:1:3", now=at(5), window=window), "another key"
    assert await store.once("reroll:1:2", now=at(10), window=window), "the window is over"
    assert not await store.once("reroll:1:2", now=at(19), window=window)
    assert await store.once("reroll:1:2", now=at(10 + 86_400), window=window), "day-old keys are cleared"


async def test_once_between_racing_callers_lets_exactly_one_through(store: AnyJobStore) -> None:
    answers = await asyncio.gather(*(store.once("k", now=at(0), window=timedelta(seconds=10)) for _ in range(8)))
    assert answers.count(True) == 1


async def test_once_refuses_a_window_longer_than_keys_are_kept(store: AnyJobStore) -> None:
    with pytest.raises(ValueError, match="window"):
        await store.once("k", now=at(0), window=timedelta(days=2))


async def test_exclusive_lets_one_task_in_at_a_time(store: AnyJobStore) -> None:
    inside: list[int] = []
    most = 0

    async def hold(n: int) -> None:
        nonlocal most
        async with store.exclusive(42):
            inside.append(n)
            most = max(most, len(inside))
            await asyncio.sleep(0.005)
            inside.remove(n)

    await asyncio.gather(*(hold(n) for n in range(6)))
    assert most == 1
    async with store.exclusive(42), store.exclusive(43):  # another key is another lock
        pass


async def test_concurrent_writers_on_one_connection_do_not_collide(store: AnyJobStore) -> None:
    jobs = await asyncio.gather(*(store.create(new_job(str(n)), now=at(n)) for n in range(20)))
    await asyncio.gather(*(store.transition(job.id, JobState.IN_QUEUE, expect=ANY, now=at(30)) for job in jobs))
    assert (await store.count_by_state())[JobState.IN_QUEUE] == 20


async def test_spend_counts_every_job_that_may_be_billed_today_and_this_month(store: AnyJobStore) -> None:
    day, month = at(0), at(-10 * 86400)

    async def made(when: float, state: JobState, *, cost: float | None = None, sent: bool = True) -> None:
        job = await store.create(new_job(), now=at(when))
        if state is JobState.DELIVERED:
            await store.transition(job.id, JobState.COMPLETED, expect=ANY, now=at(when), request_id="r", cost_usd=cost)
        await store.transition(job.id, state, expect=ANY, now=at(when), request_id="r" if sent else None)

    await made(60, JobState.DELIVERED, cost=0.03)
    await made(60, JobState.IN_PROGRESS)  # billed, no cost yet
    await made(60, JobState.CANCELLED)  # never billed
    await made(60, JobState.FAILED, sent=False)  # never reached RunComfy
    await made(-3 * 86400, JobState.DELIVERED, cost=0.05)  # this month, not today
    await made(-30 * 86400, JobState.DELIVERED, cost=0.07)  # before this month
    today, this_month = await store.spend(day=day, month=month)
    assert (today.images, round(today.cost_usd, 6), today.unpriced) == (2, 0.03, 1)
    assert (this_month.images, round(this_month.cost_usd, 6), this_month.unpriced) == (3, 0.08, 1)
    await store.prune(before=at(-86400))  # the one of three days ago is folded into the totals
    assert await store.spend(day=day, month=month) == (today, this_month)
