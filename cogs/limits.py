"""Limits and each server's waiting line, decided before anything is spent.

Per member and server: how many jobs may be in progress at once, and how many
may be made in any 24 hours (a rolling window, so there is no midnight rush).
Per server: how many jobs run at once; the rest wait in the bot, in order, as
jobs in state `waiting` (nothing sent to RunComfy, nothing billed), so a
restart loses none of them. Members with Manage Server skip the member limits
when the server allows it; nobody skips the line.

Every decision for a server happens under that server's lock, so two commands
arriving together cannot both take the last slot or the last image of a quota.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import discord

from storage.base import JobStore
from storage.models import ACTIVE_STATES, GuildSettings, Job, JobState

log = logging.getLogger(__name__)

QUOTA_WINDOW = timedelta(hours=24)


class LimitReachedError(Exception):
    """A member limit says no; the text is the sentence for the member, numbers included."""


@dataclass(frozen=True, slots=True)
class Admission:
    """Start now (`position` None) or wait in line at `position` (1 = next)."""

    position: int | None = None

    @property
    def waits(self) -> bool:
        return self.position is not None


@dataclass(frozen=True, slots=True)
class Load:
    """A server's slots and line, and one member's share: what `/imagine-queue` shows."""

    running: int
    waiting: int
    mine: tuple[Job, ...]
    positions: dict[int, int]  # job id -> place in the server's line
    quota_used: int
    quota_frees_at: datetime | None


class AdmissionControl:
    def __init__(self, store: JobStore, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.clock = clock
        self._locks: dict[int, asyncio.Lock] = {}

    def lock(self, guild_id: int) -> asyncio.Lock:
        """Held from the decision until the job row exists."""
        return self._locks.setdefault(guild_id, asyncio.Lock())

    async def admit(self, settings: GuildSettings, user_id: int, *, bypass: bool) -> Admission:
        """Whether a new job of `user_id` may start, must wait, or (LimitReachedError) may not be made.

        The caller holds `lock(settings.guild_id)` and creates the job before releasing it.
        """
        load = await self.store.guild_load(settings.guild_id, user_id)
        if not bypass:
            mine = load.mine
            if mine >= settings.member_concurrent:
                raise LimitReachedError(
                    f"You already have {mine} image{'s' if mine != 1 else ''} in progress here, and the limit is "
                    f"{settings.member_concurrent} at a time. Wait for one to finish (or cancel one), then try again."
                )
            used = await self.store.billable_since(user_id, settings.guild_id, self.clock() - QUOTA_WINDOW)
            if len(used) >= settings.member_daily:
                frees = discord.utils.format_dt(used[0] + QUOTA_WINDOW, "R")
                raise LimitReachedError(
                    f"You've made {len(used)} of your {settings.member_daily} images for the last 24 hours here. "
                    f"The next one frees up {frees}."
                )
        waiting = load.waiting
        if waiting == 0 and load.active < settings.guild_concurrent:
            return Admission()
        return Admission(position=waiting + 1)

    async def next_up(
        self, settings: GuildSettings, ready: Callable[[Job], bool] = lambda job: True
    ) -> tuple[list[Job], list[Job]]:
        """Move as many waiting jobs as there are free slots to `submitting`, oldest first.

        Returns (the jobs to send now, the jobs still waiting, in line order).
        The caller sends the first list; `submitting` is written here, under the
        lock, so the next decision already counts them. Jobs `ready` turns down
        (a reply not yet acknowledged) are left out of both.
        """
        async with self.lock(settings.guild_id):
            live = await self.store.guild_unfinished(settings.guild_id)
            running = sum(1 for job in live if job.state in ACTIVE_STATES)
            waiting = [job for job in live if job.state is JobState.WAITING and ready(job)]
            free = max(settings.guild_concurrent - running, 0)
            starting = []
            for job in waiting[:free]:
                starting.append(await self.store.transition(job.id, JobState.SUBMITTING, now=self.clock()))
                log.info("job %d leaves the waiting line", job.id, extra={"job_id": job.id})
            return starting, waiting[free:]

    async def load(self, settings: GuildSettings, user_id: int) -> Load:
        live = await self.store.guild_unfinished(settings.guild_id)
        waiting = [job for job in live if job.state is JobState.WAITING]
        used = await self.store.billable_since(user_id, settings.guild_id, self.clock() - QUOTA_WINDOW)
        return Load(
            running=sum(1 for job in live if job.state in ACTIVE_STATES),
            waiting=len(waiting),
            mine=tuple(job for job in live if job.origin.user_id == user_id),
            positions={job.id: place for place, job in enumerate(waiting, start=1)},
            quota_used=len(used),
            quota_frees_at=used[0] + QUOTA_WINDOW if used else None,
        )
