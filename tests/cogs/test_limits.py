"""Admission control against a real SQLite store: each limit, the bypass, and the server's line."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cogs.limits import AdmissionControl, LimitReachedError
from storage.models import GuildSettings, JobOrigin, JobState, NewJob
from storage.sqlite import SQLiteJobStore

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
GUILD, ALICE, BOB = 1, 2, 3
SETTINGS = GuildSettings(guild_id=GUILD, member_concurrent=2, member_daily=3, guild_concurrent=2)


def new(user: int = ALICE) -> NewJob:
    return NewJob("m", "p", "1:1", 1, JobOrigin(guild_id=GUILD, channel_id=9, user_id=user))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteJobStore]:
    store = await SQLiteJobStore.open(tmp_path / "jobs.sqlite3")
    yield store
    await store.close()


@pytest.fixture
def control(store: SQLiteJobStore) -> AdmissionControl:
    return AdmissionControl(store, lambda: NOW)


async def test_a_free_server_starts_at_once(control: AdmissionControl) -> None:
    assert not (await control.admit(SETTINGS, ALICE, bypass=False)).waits


async def test_member_concurrency_counts_waiting_jobs_too(store: SQLiteJobStore, control: AdmissionControl) -> None:
    await store.create(new(), now=NOW)
    await store.create(new(), now=NOW, state=JobState.WAITING)
    with pytest.raises(LimitReachedError, match="2 images in progress here, and the limit is 2"):
        await control.admit(SETTINGS, ALICE, bypass=False)
    bypassed = await control.admit(SETTINGS, ALICE, bypass=True)  # Manage Server, when the server allows it
    assert bypassed.position == 2  # past the member limit, but still behind the job already waiting
    assert (await control.admit(SETTINGS, BOB, bypass=False)).position == 2  # Bob is under his own limit


async def test_daily_quota_counts_a_rolling_24_hours(store: SQLiteJobStore, control: AdmissionControl) -> None:
    for hours in (30, 20, 10, 1):
        job = await store.create(new(), now=NOW - timedelta(hours=hours))
        await store.transition(job.id, JobState.IN_QUEUE, now=NOW, request_id=f"r{hours}")
        await store.transition(job.id, JobState.DELIVERED, now=NOW)
    with pytest.raises(LimitReachedError, match="3 of your 3 images") as refused:
        await control.admit(SETTINGS, ALICE, bypass=False)
    frees_at = int((NOW - timedelta(hours=20) + timedelta(hours=24)).timestamp())
    assert f"<t:{frees_at}:R>" in str(refused.value)
    assert not (await control.admit(SETTINGS, ALICE, bypass=True)).waits


async def test_a_full_server_puts_jobs_in_line_and_next_up_starts_them_in_order(
    store: SQLiteJobStore, control: AdmissionControl
) -> None:
    running = [await store.create(new(BOB), now=NOW) for _ in range(2)]
    assert (await control.admit(SETTINGS, ALICE, bypass=False)).position == 1
    first = await store.create(new(ALICE), now=NOW + timedelta(seconds=1), state=JobState.WAITING)
    assert (await control.admit(SETTINGS, ALICE, bypass=True)).position == 2  # nobody skips the line
    second = await store.create(new(ALICE), now=NOW + timedelta(seconds=2), state=JobState.WAITING)

    assert await control.next_up(SETTINGS) == ([], [first, second])
    await store.transition(running[0].id, JobState.DELIVERED, now=NOW)
    starting, waiting = await control.next_up(SETTINGS)
    assert [job.id for job in starting] == [first.id]
    assert starting[0].state is JobState.SUBMITTING
    assert [job.id for job in waiting] == [second.id]

    load = await control.load(SETTINGS, ALICE)
    assert (load.running, load.waiting, load.positions) == (2, 1, {second.id: 1})
    assert {job.id for job in load.mine} == {first.id, second.id}


async def test_next_up_leaves_jobs_without_an_acknowledged_reply_alone(
    store: SQLiteJobStore, control: AdmissionControl
) -> None:
    unconfirmed = await store.create(new(), now=NOW, state=JobState.WAITING)
    confirmed = await store.create(new(BOB), now=NOW + timedelta(seconds=1), state=JobState.WAITING)
    starting, waiting = await control.next_up(SETTINGS, lambda job: job.id == confirmed.id)
    assert [job.id for job in starting] == [confirmed.id]
    assert waiting == []
    assert (await store.get(unconfirmed.id)).state is JobState.WAITING  # type: ignore[union-attr]
