"""The community-server half of the store: per-server settings and the job queries limits and reports use.

Each test that takes `store` runs against SQLite and PostgreSQL (tests/storage/conftest.py).
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from storage.columns import UNFINISHED_WHERE
from storage.models import GuildLoad, GuildSettings, JobOrigin, JobState, NewJob
from storage.open import AnyJobStore
from storage.sqlite import SQLiteJobStore

ANY = tuple(JobState)  # the tests move jobs freely; the manager always names the state it expects

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
GUILD = 2**62
OTHER_GUILD = GUILD + 1
ALICE, BOB = 11, 12


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def job(user: int = ALICE, guild: int = GUILD, prompt: str = "p", *, exempt: bool = False) -> NewJob:
    return NewJob("m", prompt, "1:1", 1, JobOrigin(guild_id=guild, channel_id=5, user_id=user), exempt=exempt)


async def test_a_server_that_changed_nothing_gets_the_defaults(store: AnyJobStore) -> None:
    assert await store.guilds.get(GUILD) == GuildSettings(guild_id=GUILD)
    defaults = GuildSettings(guild_id=GUILD)
    assert (defaults.member_concurrent, defaults.member_queue, defaults.member_daily, defaults.guild_concurrent) == (
        3,
        10,
        25,
        10,
    )
    assert defaults.admins_bypass
    assert defaults.reaction_reroll
    assert not defaults.show_cost


async def test_settings_change_at_once_per_server_and_none_restores_a_default(store: AnyJobStore) -> None:
    changed = await store.guilds.update(GUILD, now=T0, by=ALICE, member_daily=3, show_cost=True)
    assert (changed.member_daily, changed.show_cost, changed.updated_by, changed.updated_at) == (3, True, ALICE, T0)
    again = await store.guilds.update(GUILD, now=at(1), default_aspect_ratio="16:9", member_daily=None)
    assert again.member_daily == 25
    assert again.show_cost  # untouched
    assert again.default_aspect_ratio == "16:9"
    assert (await store.guilds.update(GUILD, now=at(2), member_queue=4)).member_queue == 4
    assert await store.guilds.get(OTHER_GUILD) == GuildSettings(guild_id=OTHER_GUILD)


async def test_settings_refuse_unknown_names_and_nonsense_values(store: AnyJobStore) -> None:
    with pytest.raises(TypeError, match="unknown guild setting"):
        await store.guilds.update(GUILD, now=T0, **{"guild_id = 1; --": 1})
    with pytest.raises(ValueError, match="at least 1"):
        await store.guilds.update(GUILD, now=T0, guild_concurrent=0)
    with pytest.raises(ValueError, match="at least 1"):
        await store.guilds.update(GUILD, now=T0, member_queue=0)
    with pytest.raises(TypeError, match="bool"):
        await store.guilds.update(GUILD, now=T0, show_cost=1)


async def test_channel_and_term_lists_add_remove_and_clear(store: AnyJobStore) -> None:
    await store.guilds.set_channel(GUILD, 7, allowed=True, now=T0)
    await store.guilds.set_channel(GUILD, 7, allowed=True, now=T0)  # twice is once
    settings = await store.guilds.set_channel(GUILD, 8, allowed=True, now=T0)
    assert settings.allowed_channels == {7, 8}
    assert (await store.guilds.set_channel(GUILD, 7, allowed=False, now=T0)).allowed_channels == {8}
    assert (await store.guilds.clear_channels(GUILD)).allowed_channels == frozenset()

    await store.guilds.set_term(GUILD, "dragon", banned=True, now=T0)
    settings = await store.guilds.set_term(GUILD, "evil wizard", banned=True, now=T0)
    assert settings.banned_terms == ("dragon", "evil wizard")
    assert (await store.guilds.get(OTHER_GUILD)).banned_terms == ()
    assert (await store.guilds.set_term(GUILD, "dragon", banned=False, now=T0)).banned_terms == ("evil wizard",)
    assert (await store.guilds.clear_terms(GUILD)).banned_terms == ()
    with pytest.raises(ValueError, match="empty"):
        await store.guilds.set_term(GUILD, "", banned=True, now=T0)


async def test_a_job_can_start_waiting_and_only_submitting_or_waiting(store: AnyJobStore) -> None:
    waiting = await store.create(job(), now=T0, state=JobState.WAITING)
    assert waiting.state is JobState.WAITING
    assert [j.id for j in await store.unfinished()] == [waiting.id]  # a restart finds it
    sent = await store.transition(waiting.id, JobState.SUBMITTING, expect=ANY, now=at(1))
    assert sent is not None
    assert sent.created_at == T0  # the wait does not rewrite when it was asked for
    with pytest.raises(ValueError, match="submitting or waiting"):
        await store.create(job(), now=T0, state=JobState.IN_QUEUE)


async def test_guild_unfinished_is_one_servers_live_jobs_oldest_first(store: AnyJobStore) -> None:
    second = await store.create(job(BOB), now=at(2), state=JobState.WAITING)
    first = await store.create(job(ALICE), now=at(1))
    done = await store.create(job(ALICE), now=at(0))
    await store.transition(done.id, JobState.DELIVERED, expect=ANY, now=at(0.5))
    await store.create(job(ALICE, guild=OTHER_GUILD), now=at(1))
    assert [j.id for j in await store.guild_unfinished(GUILD)] == [first.id, second.id]


async def test_channel_unfinished_is_one_channels_live_jobs_oldest_first(store: AnyJobStore) -> None:
    def in_channel(channel: int) -> NewJob:
        return NewJob("m", "p", "1:1", 1, JobOrigin(guild_id=GUILD, channel_id=channel, user_id=ALICE))

    second = await store.create(in_channel(5), now=at(2), state=JobState.WAITING)
    first = await store.create(in_channel(5), now=at(1))
    delivering = await store.create(in_channel(5), now=at(3))
    await store.transition(delivering.id, JobState.DELIVERING, expect=ANY, now=at(3.5))
    for end in (JobState.DELIVERED, JobState.UNDELIVERABLE):
        done = await store.create(in_channel(5), now=at(0))
        await store.transition(done.id, end, expect=ANY, now=at(0.5))
    await store.create(in_channel(6), now=at(1))
    assert [j.id for j in await store.channel_unfinished(5)] == [first.id, second.id, delivering.id]


async def test_guild_load_counts_a_servers_live_jobs_without_loading_them(store: AnyJobStore) -> None:
    assert await store.guild_load(GUILD, ALICE) == GuildLoad(mine_active=0, mine_waiting=0, active=0, waiting=0)
    await store.create(job(ALICE), now=at(1))
    await store.create(job(ALICE), now=at(1), state=JobState.WAITING)
    await store.create(job(BOB), now=at(1))
    await store.create(job(ALICE, exempt=True), now=at(1))  # an admin's job still counts among hers
    done = await store.create(job(ALICE), now=at(0))
    await store.transition(done.id, JobState.DELIVERED, expect=ANY, now=at(0.5))
    made = await store.create(job(ALICE), now=at(0))
    await store.transition(made.id, JobState.DELIVERING, expect=ANY, now=at(0.5))  # delivering holds no slot
    await store.create(job(ALICE, guild=OTHER_GUILD), now=at(1))
    assert await store.guild_load(GUILD, ALICE) == GuildLoad(mine_active=2, mine_waiting=1, active=3, waiting=1)
    assert await store.guild_load(GUILD, BOB) == GuildLoad(mine_active=1, mine_waiting=0, active=3, waiting=1)


async def test_billable_since_skips_cancelled_and_never_sent_jobs(store: AnyJobStore) -> None:
    kept = []
    for hours in (0, 1, 2, 3, 4):
        kept.append(await store.create(job(), now=at(hours)))
    await store.transition(kept[1].id, JobState.CANCELLED, expect=ANY, now=at(1))
    await store.transition(kept[2].id, JobState.FAILED, expect=ANY, now=at(2))  # failed before RunComfy accepted it
    await store.transition(kept[3].id, JobState.IN_QUEUE, expect=ANY, now=at(3), request_id="r3")
    await store.transition(kept[3].id, JobState.FAILED, expect=ANY, now=at(3))  # failed upstream: may be billed
    await store.create(job(BOB), now=at(4))
    await store.create(job(guild=OTHER_GUILD), now=at(4))
    assert await store.billable_since(ALICE, GUILD, at(0.5)) == [at(3), at(4)]
    assert await store.billable_since(ALICE, GUILD, at(-1)) == [at(0), at(3), at(4)]


async def test_results_for_user_are_delivered_jobs_newest_first(store: AnyJobStore) -> None:
    ids = []
    for hours in (1, 2, 3):
        made = await store.create(job(), now=at(hours))
        await store.transition(made.id, JobState.DELIVERED, expect=ANY, now=at(hours + 0.1))
        ids.append(made.id)
    await store.create(job(), now=at(4))  # still running
    assert [j.id for j in await store.results_for_user(ALICE, GUILD, limit=2)] == [ids[2], ids[1]]


async def test_usage_sums_per_day_and_per_member(store: AnyJobStore) -> None:
    async def finished(user: int, hours: float, cost: float | None, estimated: bool = False) -> None:
        made = await store.create(job(user), now=at(hours))
        await store.transition(
            made.id, JobState.COMPLETED, expect=ANY, now=at(hours), cost_usd=cost, cost_estimated=estimated
        )

    await finished(ALICE, 0, 0.03)
    await finished(ALICE, 1, 0.03, estimated=True)
    await finished(BOB, 1, None)
    await finished(BOB, 24, 0.5)
    report = await store.usage(GUILD, at(-1))
    assert [(d.day, d.images, round(d.cost_usd, 4), d.estimated, d.unpriced) for d in report.days] == [
        ("2025-03-01", 3, 0.06, 1, 1),
        ("2025-03-02", 1, 0.5, 0, 0),
    ]
    assert [(m.user_id, m.images, round(m.cost_usd, 4), m.estimated, m.unpriced) for m in report.members] == [
        (BOB, 2, 0.5, 0, 1),  # as many images as Alice, but more spent
        (ALICE, 2, 0.06, 1, 0),
    ]
    assert (report.images, report.estimated, report.unpriced) == (4, 1, 1)
    assert (await store.usage(GUILD, at(2))).images == 1
    assert (await store.usage(OTHER_GUILD, at(-1))).days == ()


def test_the_server_queue_query_uses_its_partial_index(tmp_path: Path) -> None:
    import asyncio

    path = tmp_path / "plan.sqlite3"

    async def make() -> None:
        store = await SQLiteJobStore.open(path)
        await store.close()

    asyncio.run(make())
    with sqlite3.connect(path) as db:
        plan = db.execute(
            f"EXPLAIN QUERY PLAN SELECT id FROM jobs WHERE guild_id = ? AND {UNFINISHED_WHERE} ORDER BY created_at",  # noqa: S608
            (GUILD,),
        ).fetchall()
    db.close()
    assert "jobs_guild_unfinished" in str(plan)
