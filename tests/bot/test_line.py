"""Each server's line against a real SQLite store: admission, the member's and the server's limits, the order."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Coroutine
from datetime import timedelta
from typing import Any

import pytest

from bot.jobs import Limit, LimitReachedError
from bot.jobs.budget import Budget, BudgetGuard
from bot.jobs.events import JobAccepted, JobEvent, JobSubmitting, JobWaiting, WaitReason
from bot.jobs.ledger import Ledger
from bot.jobs.line import PLACE_GONE, TOO_LONG_IN_LINE, Line
from storage.models import GuildSettings, Job, JobInput, JobOrigin, JobState, NewJob
from storage.sqlite import SQLiteJobStore
from tests.clocks import MovableClock

GUILD, ALICE, BOB = 1, 2, 3
ANY = tuple(JobState)


def new(user: int = ALICE, *, exempt: bool = False) -> NewJob:
    return NewJob("m", "p", "1:1", 1, JobOrigin(guild_id=GUILD, channel_id=9, user_id=user), exempt=exempt)


class LineUnderTest:
    """A line whose `send` only records (and marks the job queued, as the real one would)."""

    def __init__(self, store: SQLiteJobStore, clock: MovableClock) -> None:
        self.store = store
        self.clock = clock
        self.ledger = Ledger(store, clock)
        self.events: list[JobEvent] = []
        self.ledger.subscribe(self.events.append)
        self.sent: list[int] = []
        self.tasks: set[asyncio.Task[Any]] = set()
        self.budget = BudgetGuard(store, clock, Budget(), lambda: None)
        self.line = Line(self.ledger, clock, self.send, self.spawn, job_timeout=600, budget=self.budget)

    async def send(self, job: Job) -> None:
        self.sent.append(job.id)
        await self.store.transition(job.id, JobState.IN_QUEUE, expect=JobState.SUBMITTING, now=self.clock.now())

    def spawn(self, work: Coroutine[Any, Any, object], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def settle(self) -> None:
        while self.tasks:
            await asyncio.gather(*self.tasks)

    async def finish(self, job_id: int) -> None:
        await self.store.transition(job_id, JobState.DELIVERED, expect=ANY, now=self.clock.now())

    def waiting(self, job_id: int) -> list[JobWaiting]:
        return [e for e in self.events if isinstance(e, JobWaiting) and e.job.id == job_id]


@pytest.fixture
async def line(tmp_path: Any) -> AsyncIterator[LineUnderTest]:
    store = await SQLiteJobStore.open(tmp_path / "jobs.sqlite3")
    under_test = LineUnderTest(store, MovableClock())
    yield under_test
    await under_test.settle()
    await store.close()


async def settings(line: LineUnderTest, **fields: Any) -> GuildSettings:
    return await line.store.guilds.update(GUILD, now=line.clock.now(), **fields)


async def confirmed(line: LineUnderTest, job: NewJob, settings: GuildSettings) -> Job:
    ticket = await line.line.enqueue(job, settings)
    line.line.confirm(ticket.job)
    await line.line.pump(GUILD)
    await line.settle()
    return ticket.job


async def test_every_job_is_written_waiting_and_starts_once_confirmed(line: LineUnderTest) -> None:
    chosen = await settings(line)
    ticket = await line.line.enqueue(new(), chosen)
    assert ticket.job.state is JobState.WAITING
    assert ticket.position == 1
    assert ticket.job.post_nonce is not None
    assert [type(e) for e in line.events] == [JobAccepted]
    await line.line.pump(GUILD)
    await line.settle()
    assert line.sent == []  # its reply does not exist yet: it must not be sent
    line.line.confirm(ticket.job)
    await line.line.pump(GUILD)
    await line.settle()
    assert line.sent == [ticket.job.id]
    assert any(isinstance(e, JobSubmitting) for e in line.events)


async def test_a_members_extra_jobs_wait_their_turn_with_their_place_shown(line: LineUnderTest) -> None:
    chosen = await settings(line, member_concurrent=3)
    jobs = [await confirmed(line, new(), chosen) for _ in range(4)]
    assert line.sent == [job.id for job in jobs[:3]]
    [shown] = line.waiting(jobs[3].id)
    assert (shown.position, shown.reason) == (1, WaitReason.MEMBER)
    bob = await confirmed(line, new(BOB), chosen)  # another member is not held up by Alice's fourth
    assert line.sent[-1] == bob.id
    await line.finish(jobs[0].id)
    await line.line.pump(GUILD)
    await line.settle()
    assert line.sent[-1] == jobs[3].id


async def test_past_the_members_share_of_the_line_a_new_job_is_refused(line: LineUnderTest) -> None:
    chosen = await settings(line, member_concurrent=1, member_queue=2)
    for _ in range(3):
        await confirmed(line, new(), chosen)  # one running, two waiting
    with pytest.raises(LimitReachedError) as refused:
        await line.line.enqueue(new(), chosen)
    assert (refused.value.limit, refused.value.used, refused.value.allowed) == (Limit.QUEUE, 2, 2)
    assert await line.line.enqueue(new(BOB), chosen)  # others are not held to Alice's share
    ticket = await line.line.enqueue(new(exempt=True), chosen)  # an admin the server exempts
    assert ticket.job.state is JobState.WAITING


async def test_an_edit_without_its_image_never_leaves_the_line_even_if_confirmed(line: LineUnderTest) -> None:
    """An edit is written before its image is read; confirming it early (a bug) must not send RunComfy a link
    nobody checked: only once the job holds its image may it go."""
    chosen = await settings(line)
    edit = await confirmed(line, dataclasses.replace(new(), input_url="https://cdn.example/a.png"), chosen)
    assert edit.awaits_input
    assert line.sent == []
    image_id = await line.store.inputs.add(JobInput("image/png", 1, 1, b"\x89PNG"), now=line.clock.now())
    given = await line.store.give_input(edit.id, image_id, now=line.clock.now())
    assert given is not None
    line.line.wake(given)
    await line.line.pump(GUILD)
    await line.settle()
    assert line.sent == [edit.id]


async def test_daily_quota_counts_a_rolling_24_hours(line: LineUnderTest) -> None:
    chosen = await settings(line, member_daily=3)
    now = line.clock.now()
    for hours in (30, 20, 10, 1):
        job = await line.store.create(new(), now=now - timedelta(hours=hours))
        await line.store.transition(job.id, JobState.IN_QUEUE, expect=ANY, now=now, request_id=f"r{hours}")
        await line.store.transition(job.id, JobState.DELIVERED, expect=ANY, now=now)
    with pytest.raises(LimitReachedError) as refused:
        await line.line.enqueue(new(), chosen)
    assert (refused.value.limit, refused.value.used, refused.value.allowed) == (Limit.DAILY, 3, 3)
    assert refused.value.frees_at == now - timedelta(hours=20) + timedelta(hours=24)
    await line.line.enqueue(new(exempt=True), chosen)


async def test_a_full_server_starts_its_line_in_order_and_nobody_skips_it(line: LineUnderTest) -> None:
    chosen = await settings(line, guild_concurrent=2)
    running = [await confirmed(line, new(BOB), chosen) for _ in range(2)]
    first = await confirmed(line, new(), chosen)
    second = await confirmed(line, new(exempt=True), chosen)  # exempt from her own limits, not from the line
    assert line.sent == [job.id for job in running]
    assert [e.position for e in line.waiting(first.id)] == [1]
    assert [e.position for e in line.waiting(second.id)] == [2]
    await line.finish(running[0].id)
    await line.line.pump(GUILD)
    await line.settle()
    assert line.sent[-1] == first.id
    assert [e.position for e in line.waiting(second.id)] == [2, 1]  # it moved up, and was told
    load = await line.line.load(chosen, ALICE)
    assert (load.running, load.waiting, load.positions) == (2, 1, {second.id: 1})


async def test_a_job_that_waited_too_long_is_told_so_before_it_is_sent(line: LineUnderTest) -> None:
    chosen = await settings(line, guild_concurrent=1)
    await confirmed(line, new(BOB), chosen)
    stuck = await confirmed(line, new(), chosen)
    line.clock.advance(601)
    await line.line.pump(GUILD)
    await line.settle()
    row = await line.store.get(stuck.id)
    assert row is not None
    assert row.state is JobState.FAILED
    assert row.error == TOO_LONG_IN_LINE.format(minutes=10)
    assert row.deliver_at is not None  # the member is told, in the reply
    assert stuck.id not in line.sent


async def test_a_waiting_job_whose_place_went_before_a_crash_is_ended_not_kept(line: LineUnderTest) -> None:
    # JobManager._gone writes deleted_at, then cancels: a crash between the two left the job waiting for ever,
    # holding a place among its member's jobs. After the restart the line ends it, quietly (nowhere to tell).
    chosen = await settings(line, member_queue=1)
    ticket = await line.line.enqueue(new(), chosen)
    now = line.clock.now()
    await line.store.update(ticket.job.id, expect=None, now=now, message_id=77, deleted_at=now)
    await line.line.pump(GUILD)
    await line.settle()
    ended = await line.store.get(ticket.job.id)
    assert ended is not None
    assert (ended.state, ended.error, ended.deliver_at) == (JobState.CANCELLED, PLACE_GONE, None)
    assert line.sent == []
    assert (await line.store.guild_load(GUILD, ALICE)).mine_waiting == 0


async def test_two_commands_at_once_cannot_both_take_the_last_slot(line: LineUnderTest) -> None:
    chosen = await settings(line, guild_concurrent=1)
    tickets = await asyncio.gather(*(line.line.enqueue(new(user), chosen) for user in (ALICE, BOB)))
    for ticket in tickets:
        line.line.confirm(ticket.job)
    await asyncio.gather(line.line.pump(GUILD), line.line.pump(GUILD))
    await line.settle()
    assert len(line.sent) == 1


async def test_a_waiting_job_whose_place_is_gone_never_leaves_the_line(line: LineUnderTest) -> None:
    # A server or channel going away ends its jobs one by one; cancelling the running one frees a slot, and the
    # line must not spend it on a job already known to be gone, whose own ending may not have been written yet.
    chosen = await settings(line, guild_concurrent=1)
    running = await confirmed(line, new(BOB), chosen)
    gone = await confirmed(line, new(), chosen)
    behind = await confirmed(line, new(), chosen)
    await line.store.update(gone.id, expect=None, now=line.clock.now(), deleted_at=line.clock.now())
    await line.finish(running.id)
    await line.line.pump(GUILD)
    await line.settle()
    assert line.sent == [running.id, behind.id]
    assert [e.position for e in line.waiting(behind.id)] == [2]  # shown behind it before it was known gone
