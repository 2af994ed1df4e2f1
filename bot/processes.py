"""This process among the others on one PostgreSQL database: its name, its shards, its heartbeat.

Before it connects to Discord, a process sharing the database registers its
shards (storage/postgres/registry.py): a live process already running any of
them, or running another SHARD_COUNT, stops this one with one sentence. A
process restarted in place of its own crashed run (same host, same shards)
watches the old run's heartbeat for 0.8 of a lease (more than two heartbeat
intervals) to be sure it is silent, then takes its place and, through the job
manager, its jobs.

The heartbeat runs every third of LEASE_SECONDS. If this process's row is
gone (it was silent for a lease, say during a long network cut, and another
process took its shards), it must not go on answering those shards' events:
`on_lost` stops the bot.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import asyncpg

from bot.clock import Clock
from bot.settings import Settings
from storage.postgres.jobs import PostgresJobStore
from storage.postgres.registry import ProcessInfo, ProcessRegistry, ShardsTakenError
from storage.sqlite_common import StoreUnavailableError

log = logging.getLogger(__name__)

# Of a lease: how long a previous run's heartbeat must stay still to be taken for dead. More than two heartbeat
# intervals (each a third of the lease), so one heartbeat that failed or came late does not pass for a death.
SILENCE_TO_WATCH = 0.8
LOST_SHARDS = (
    "this process was silent for longer than LEASE_SECONDS and another process has taken its shards over; "
    "stopping so that no event is answered twice"
)


def process_name(host: str | None = None, pid: int | None = None) -> str:
    """A name for this run of the process, unique across restarts (the host and pid, plus a random tail)."""
    return f"{host or socket.gethostname()}-{pid or os.getpid()}-{secrets.token_hex(3)}"


@dataclass
class Membership:
    """This process's row in the registry, kept alive by a heartbeat until `leave()`."""

    registry: ProcessRegistry
    me: ProcessInfo
    predecessor: str | None  # the crashed run this process replaced, whose jobs it adopts
    clock: Clock
    on_lost: Callable[[], None]
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def process_id(self) -> str:
        return self.me.process_id

    @classmethod
    async def join(
        cls, store: PostgresJobStore, settings: Settings, *, clock: Clock, on_lost: Callable[[], None]
    ) -> Membership:
        """Register this process's shards (ShardsTakenError when another live process runs one of them)."""
        lease = timedelta(seconds=settings.lease_seconds)
        registry = ProcessRegistry(store.pool, lease=lease)
        host, pid = socket.gethostname(), os.getpid()
        count = settings.shard_count or 1
        shards = tuple(settings.owned_shards or [0])
        me = process_name(host, pid)
        predecessor: str | None = None
        try:
            info = await registry.register(me, host=host, pid=pid, shard_count=count, shard_ids=shards, now=clock.now())
        except ShardsTakenError as taken:
            holder = taken.holder
            if (holder.host, holder.shard_count, holder.shard_ids) != (host, count, shards):
                raise
            # Most likely this process's own previous run, killed: it is dead if its heartbeat no longer moves.
            log.info("process %s runs these shards on this host; checking whether it is still alive", holder.process_id)
            if not await registry.is_silent(holder, wait=lease.total_seconds() * SILENCE_TO_WATCH):
                raise
            info = await registry.register(
                me, host=host, pid=pid, shard_count=count, shard_ids=shards, now=clock.now(), replaces=holder
            )
            predecessor = holder.process_id
        membership = cls(registry, info, predecessor, clock, on_lost)
        membership._task = asyncio.create_task(membership._beat(lease.total_seconds() / 3), name="registry-heartbeat")
        return membership

    async def _beat(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                alive = await self.registry.heartbeat(self.process_id, now=self.clock.now())
            except (StoreUnavailableError, OSError, asyncpg.PostgresError) as error:
                log.warning("registry heartbeat failed (%s); trying again in %.0f s", error, every)
                continue
            if not alive:
                log.error(LOST_SHARDS)
                self.on_lost()
                return

    async def leave(self) -> None:
        """Stop the heartbeat and free the shards at once (a clean stop)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await self.registry.deregister(self.process_id)
        except (StoreUnavailableError, OSError, asyncpg.PostgresError) as error:
            log.warning("not removed from the process registry (%s): its entry runs out by itself", error)
