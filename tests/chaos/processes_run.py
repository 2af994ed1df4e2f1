"""Crash-kill chaos over several bot processes sharing one PostgreSQL database.

`ProcessesChaosRun` does to several processes (`plan.processes`, one Discord
shard each, servers spread over the shards) what `ChaosRun`
(`tests/chaos/harness.py`) does to one: one process at a time is killed and
restarted while the others keep running, and every job the dead process held
is watched in the database until another process (or its own restart) has
claimed it. That delay is what the leases promise ("taken over within the lease
time"); the report prints it (p50, p95, how many within the lease) and a job
never taken over is a broken promise, but the delay itself is not asserted: a
slow CI machine must not fail a test of correctness.
`tests/chaos/test_processes.py` runs it in CI, `bench/chaos.py --processes 3`
runs long ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from tests.chaos.bot_process import BotProcess, bot_environment
from tests.chaos.fakes import World
from tests.chaos.harness import Chaos
from tests.chaos.job_rows import JobRow, read_jobs_postgres
from tests.chaos.plan import ChaosPlan
from tests.chaos.report import ChaosReport, Life, TakeOver
from tests.fakediscord import FakeGuild, shard_of


@dataclass
class Slot:
    """One of the processes of a ProcessesChaosRun: it runs shard `number`, one life after another."""

    number: int
    process: BotProcess | None = None
    life: Life | None = None
    up: bool = False  # its gateway session is READY and it has not been killed since


class ProcessesChaosRun(Chaos):
    """`plan.processes` bots on one PostgreSQL database, one shard each; one at a time is SIGKILLed and restarted.

    Members send /imagine to every server all along (to a dead process's servers only `down_command_share` of
    the time while it is down). After each kill the database is watched every `WATCH_EVERY` seconds for the jobs
    the dead process held (`lease_owner` names it: host-pid-...) until each names another holder: the take-over
    delay, SIGKILL to that moment, as seen from outside (so up to `WATCH_EVERY` late). The next process is
    killed only once the restarted one is READY again (by then it has adopted what was left of its
    predecessor's jobs), so one process at a time is down.
    """

    WATCH_EVERY = 0.05

    def __init__(self, plan: ChaosPlan, world: World, workdir: Path, database_url: str) -> None:
        environment = bot_environment(
            world,
            workdir,
            DATABASE_URL=database_url,
            SHARD_COUNT=str(plan.processes),
            LEASE_SECONDS=f"{plan.lease_seconds:g}",
            LOG_FORMAT="json",
        )
        super().__init__(plan, world, workdir, environment)
        self.database_url = database_url
        self.kill_rng = random.Random(plan.seed + 1)  # the kills' own: the members' task draws concurrently
        self.slots = [Slot(number) for number in range(plan.processes)]
        self.takeovers: list[TakeOver] = []
        self._watchers: list[asyncio.Task[None]] = []
        self._pool: asyncpg.Pool | None = None
        self._host = socket.gethostname()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("not running")
        return self._pool

    async def read_jobs(self) -> list[JobRow]:
        return await read_jobs_postgres(self.pool)

    def environment_for(self, shard_ids: str) -> dict[str, str]:
        return self.environment | {"SHARD_IDS": shard_ids}

    @property
    def kills(self) -> int:
        return sum(1 for life in self.lives if life.killed_after is not None)

    # -- the processes -------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Every process started and READY; afterwards each stopped with SIGTERM (it hands its jobs over)."""
        async with asyncpg.create_pool(self.database_url, min_size=1, max_size=4) as pool:
            self._pool = pool
            try:
                await asyncio.gather(*(self._start(slot) for slot in self.slots))
                yield
            finally:
                for slot in self.slots:
                    if slot.process is not None and slot.life is not None:
                        await self._end(slot.process, slot.life, signal.SIGTERM, killed=False)
                for watcher in self._watchers:
                    watcher.cancel()
                await asyncio.gather(*self._watchers, return_exceptions=True)
                self._pool = None

    async def _start(self, slot: Slot, *, startup_kill: bool = False) -> bool:
        """Spawn the slot's next life; True once READY, False if it was killed during its startup (then it is
        killed at a random moment up to 2.3 s after the spawn, mostly while it makes sure its predecessor is dead)."""
        fake = self.world.fake
        life = Life(len(self.lives), time.monotonic(), slot=slot.number)
        self.lives.append(life)
        process = BotProcess(self.workdir, self.environment_for(str(slot.number)), life.number)
        shard = (slot.number, self.plan.processes)
        before = set(fake.gateway.sessions)
        await process.start()
        life.pid = process.pid
        slot.process, slot.life = process, life

        def ready() -> bool:
            return process.exited or any(
                session.shard == shard and fake.gateway.attached(session) and session_id not in before
                for session_id, session in fake.gateway.sessions.items()
            )

        within = self.kill_rng.uniform(0.05, 2.3) if startup_kill else self.plan.ready_timeout
        try:
            await fake.wait_for(ready, within)
        except AssertionError:
            if not startup_kill:
                log = process.log_text()[-3000:]
                raise AssertionError(f"process {slot.number} not ready within {within} s:\n{log}") from None
            life.startup_kill = True
            await self._kill(slot)
            return False
        if process.exited:
            code = process.process and process.process.returncode
            raise AssertionError(
                f"process {slot.number} exited on its own (code {code}):\n{process.log_text()[-3000:]}"
            )
        life.ready_after = time.monotonic() - life.spawned_at
        slot.up = True
        return True

    async def _kill(self, slot: Slot) -> None:
        """SIGKILL the slot's process and watch the jobs it held until others hold them."""
        assert slot.process is not None
        assert slot.life is not None
        slot.up = False
        pid = slot.process.pid
        killed_at = time.time()  # wall clock, as the database's
        await self._end(slot.process, slot.life, signal.SIGKILL)
        watcher = self._watch_orphans(slot.life, f"{self._host}-{pid}-", killed_at)
        self._watchers.append(asyncio.create_task(watcher, name=f"orphans-of-{slot.life.number}"))

    def _check_alive(self) -> None:
        for slot in self.slots:
            if slot.up and slot.process is not None and slot.process.exited:
                raise AssertionError(f"process {slot.number} exited on its own:\n{slot.process.log_text()[-3000:]}")

    # -- the schedule -----------------------------------------------------------------

    async def run(self) -> ChaosReport:
        plan = self.plan
        began = time.monotonic()
        async with self.running():
            members = asyncio.create_task(self._members(), name="members")
            try:
                while self.kills < plan.min_kills or not members.done():
                    await self._up_for(self.kill_rng.uniform(*plan.uptime), members)
                    victim = self.kill_rng.choice(self.slots)
                    await self._kill(victim)
                    await self._up_for(self.kill_rng.uniform(*plan.down_time), members)
                    while not await self._start(victim, startup_kill=self.kill_rng.random() < plan.startup_kill_share):
                        pass  # killed during its own startup: start it again
                await members
            finally:
                members.cancel()
                await asyncio.gather(members, return_exceptions=True)
            await self._settle([slot.process for slot in self.slots if slot.process is not None])
            await asyncio.gather(*self._watchers)  # each ends within a few leases of its kill
            rows = await self.read_jobs()
        report = self._verify(rows)
        report.takeovers = self.takeovers
        for takeover in self.takeovers:
            if takeover.delay is None:
                report.problems.append(
                    f"job {takeover.job_id} ({takeover.state}), orphaned by the kill of life {takeover.kill}, "
                    "was never taken over"
                )
        report.duration = time.monotonic() - began
        return report

    async def _up_for(self, seconds: float, members: asyncio.Task[None]) -> None:
        """Wait `seconds` while the processes that are up run (the members' task keeps sending)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._check_alive()
            if members.done() and members.exception() is not None:
                await members
            await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    async def _members(self) -> None:
        """`plan.jobs` commands at random gaps over every server."""
        while len(self.sent) < self.plan.jobs:
            await asyncio.sleep(self.rng.expovariate(1 / self.plan.command_gap))
            self._check_alive()
            someone_down = not all(slot.up for slot in self.slots)
            await self._send(bot_up=not (someone_down and self.rng.random() < self.plan.down_command_share))

    def _guild_for(self, *, bot_up: bool) -> FakeGuild:
        """A server whose process is up (`bot_up`) or down; any server when there is none of that kind."""
        shards = self.plan.processes
        wanted = [g for g in self.world.guilds if self.slots[shard_of(g.id, shards)].up == bot_up]
        return self.rng.choice(wanted or self.world.guilds)

    # -- the take-over ---------------------------------------------------------------

    async def _watch_orphans(self, life: Life, prefix: str, killed_at: float) -> None:
        """Until each live job held by `prefix` (the dead process) names another holder; TakeOvers recorded.

        Runs at least until the dead process's leases have run out and a scan has had time to claim them (a
        statement of the dead process still in flight at the kill may land after the first look), and gives up a
        few leases later: a job still held by the dead process then was never taken over, a broken promise
        whatever the machine's speed. How long each take-over took is reported, never checked.
        """
        plan = self.plan
        found: dict[int, TakeOver] = {}
        quiet_after = killed_at + plan.lease_seconds + 1.5
        give_up = killed_at + 3 * plan.lease_seconds + 15
        while True:
            rows = await self.pool.fetch(_HELD_SQL, prefix, list(found))
            seen = time.time()
            for row in rows:
                job_id, owner, live = row["id"], row["lease_owner"], row["live"]
                held = owner is not None and owner.startswith(prefix)
                if held and live and job_id not in found:
                    found[job_id] = takeover = TakeOver(life.number, job_id, row["state"])
                    self.takeovers.append(takeover)
                elif job_id in found and found[job_id].delay is None and not held:
                    claimer = next((other for other in self.lives if other.pid == _owner_pid(owner)), None)
                    found[job_id].delay = seen - killed_at
                    found[job_id].by_restart = claimer is not None and claimer.slot == life.slot
                elif job_id in found and held and not live:
                    # It ended while held by the dead process: its last statement landed after the kill.
                    self.takeovers.remove(found.pop(job_id))
            settled = all(takeover.delay is not None for takeover in found.values())
            if (settled and seen > quiet_after) or seen > give_up:
                return
            await asyncio.sleep(self.WATCH_EVERY)


def _owner_pid(owner: str | None) -> int | None:
    """The pid in a lease holder's name (host-pid-random, bot/processes.py)."""
    try:
        return int((owner or "").rsplit("-", 2)[-2])
    except (IndexError, ValueError):
        return None


_HELD_SQL = """
SELECT id, state, lease_owner,
       (state NOT IN ('delivered', 'undeliverable', 'failed', 'cancelled') OR deliver_at IS NOT NULL) AS live
FROM jobs WHERE starts_with(lease_owner, $1) OR id = ANY($2::bigint[])
"""
