"""Crash-kill chaos: the real `python -m bot` process, SIGKILLed at random moments and restarted.

The fake Discord and the RunComfy emulator (`tests/chaos/fakes.py`) run in the
caller's event loop on 127.0.0.1; the bot is a subprocess pointed at them
through its settings (`tests/chaos/bot_process.py`), so a kill is a real kill:
no `finally`, no flush, no goodbye to the gateway. Members send `/imagine`
commands while the bot is up (a member sees it online), a few while it is
down, and some race the kill. Afterwards every command is checked against
what Discord shows, what the emulator was asked and what the database holds
(`tests/chaos/verdict.py`). `tests/chaos/test_chaos.py` runs a small plan in
CI; `bench/chaos.py` runs long ones.

Here: what every run shares (`Chaos`) and the run of one process on one
SQLite file (`ChaosRun`); several processes on one PostgreSQL database are
`tests/chaos/processes_run.py`.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bot.model_spec import RATIO_VALUES
from tests.chaos.bot_process import BotProcess, bot_environment
from tests.chaos.fakes import World
from tests.chaos.job_rows import UNFINISHED, JobRow, read_jobs, unannounced
from tests.chaos.plan import ChaosPlan
from tests.chaos.report import ChaosReport, Life
from tests.chaos.verdict import Sent, final_text, verify
from tests.fakediscord import FakeGuild

SUBJECTS = ("a lighthouse in a storm", "a fox in the snow", "a paper city", "a tea garden", "a glass whale")


class Chaos:
    """What both runs share: members sending /imagine, waiting for everything to settle, and the verdict."""

    def __init__(self, plan: ChaosPlan, world: World, workdir: Path, environment: dict[str, str]) -> None:
        self.plan = plan
        self.world = world
        self.workdir = workdir
        self.environment = environment
        self.rng = random.Random(plan.seed)  # a reproducible schedule
        self.sent: list[Sent] = []
        self.lives: list[Life] = []
        self.logs: list[str] = []

    async def read_jobs(self) -> list[JobRow]:
        """Every job row, read around the store under test."""
        raise NotImplementedError

    def _guild_for(self, *, bot_up: bool) -> FakeGuild:
        """The server of the next command (one process: the only one)."""
        guilds = self.world.guilds
        return guilds[0] if len(guilds) == 1 else self.rng.choice(guilds)

    async def _send(self, *, bot_up: bool) -> None:
        index = len(self.sent)
        prompt = f"chaos {index:03d}: {self.rng.choice(SUBJECTS)}"
        guild = self._guild_for(bot_up=bot_up)
        member = self.rng.choice(self.world.members_of(guild))
        channel = self.rng.choice(self.world.channels_of(guild))
        options: dict[str, Any] = {"prompt": prompt}
        if self.rng.random() < 0.5:
            options["aspect_ratio"] = self.rng.choice(RATIO_VALUES)
        if self.rng.random() < 0.5:
            options["seed"] = self.rng.randrange(2**31)
        interaction = await member.run_command("imagine", channel, **options)
        self.sent.append(Sent(index, prompt, interaction, bot_up))

    async def _end(self, process: BotProcess, life: Life, sig: int, *, killed: bool = True) -> None:
        was_running = not process.exited
        life.exit_code = await process.stop(sig)
        if killed and was_running:
            life.killed_after = time.monotonic() - life.spawned_at
        self.logs.append(process.log_text())

    async def _settle(self, processes: Sequence[BotProcess]) -> None:
        """Until every acknowledged reply shows a final state and the database has nothing left to do."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.plan.settle_timeout
        while True:
            for process in processes:
                if process.exited:
                    raise AssertionError(f"a bot exited on its own:\n{process.log_text()[-3000:]}")
            rows = await self.read_jobs()
            busy = [row for row in rows if row.state in UNFINISHED or unannounced(row)]
            waiting = [sent for sent in self.sent if sent.interaction.acked and final_text(sent) is None]
            pending = [sent for sent in self.sent if not sent.interaction.acked and not sent.interaction.failed]
            if not busy and not waiting and not pending:
                await asyncio.sleep(1.0)  # room for a late duplicate edit to show up
                return
            if loop.time() > deadline:
                return  # the verification names what never settled
            await asyncio.sleep(0.1)

    # -- the verdict --------------------------------------------------------------

    def _verify(self, rows: list[JobRow]) -> ChaosReport:
        return verify(self.plan, self.lives, self.sent, self.world, rows, self.logs)

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join("\n".join(log.splitlines()[-lines:]) for log in self.logs[-2:])


class ChaosRun(Chaos):
    """One process at a time on one SQLite file; `await run()` returns the report."""

    def __init__(self, plan: ChaosPlan, world: World, workdir: Path) -> None:
        super().__init__(plan, world, workdir, bot_environment(world, workdir))
        self.database = workdir / "imagine.sqlite3"

    async def read_jobs(self) -> list[JobRow]:
        return await asyncio.to_thread(read_jobs, self.database)

    # -- the schedule -----------------------------------------------------------

    async def run(self) -> ChaosReport:
        plan = self.plan
        began = time.monotonic()
        while len(self.sent) < plan.jobs or len(self.lives) < plan.min_kills:
            first = not self.lives
            startup_kill = not first and self.rng.random() < plan.startup_kill_share
            startup_kill = startup_kill and len(self.lives) not in plan.outage_lives
            process, life = await self._spawn()
            try:
                if startup_kill:
                    life.startup_kill = True
                    await self._until_ready(process, life, within=self.rng.uniform(0.05, 1.2), required=False)
                else:
                    await self._until_ready(process, life, within=plan.ready_timeout, required=True)
                    if life.number in plan.outage_lives:
                        await self._discord_outage(process, life)
                    await self._members_while_up(self.rng.uniform(*plan.uptime), process)
            finally:
                await self._end(process, life, signal.SIGKILL)
            if self.rng.random() < plan.down_command_share and len(self.sent) < plan.jobs:
                await self._send(bot_up=False)
        process, life = await self._spawn()
        try:
            await self._until_ready(process, life, within=plan.ready_timeout, required=True)
            await self._settle([process])
        finally:
            await self._end(process, life, signal.SIGTERM, killed=False)
        report = self._verify(await self.read_jobs())
        report.duration = time.monotonic() - began
        return report

    async def _spawn(self) -> tuple[BotProcess, Life]:
        life = Life(len(self.lives), time.monotonic())
        life.unfinished_at_spawn = sum(1 for row in await self.read_jobs() if row.state in UNFINISHED)
        self.lives.append(life)
        process = BotProcess(self.workdir, self.environment, life.number)
        self._requests_before = len(self.world.fake.requests)
        self._identify_before = self.world.fake.gateway.identify_count
        await process.start()
        life.pid = process.pid
        return process, life

    async def _until_ready(self, process: BotProcess, life: Life, *, within: float, required: bool) -> None:
        fake = self.world.fake

        def ready() -> bool:
            if life.login_after is None and len(fake.requests) > self._requests_before:
                life.login_after = time.monotonic() - life.spawned_at
            return process.exited or (fake.gateway.identify_count > self._identify_before and fake.gateway.connected)

        try:
            await fake.wait_for(ready, within)
        except AssertionError:
            if required:
                raise AssertionError(f"bot not ready within {within} s:\n{process.log_text()[-3000:]}") from None
            return
        if process.exited:
            raise AssertionError(f"the bot exited on its own (code {process.process and process.process.returncode}):\n"
                                 f"{process.log_text()[-3000:]}")  # fmt: skip
        life.ready_after = time.monotonic() - life.spawned_at

    async def _discord_outage(self, process: BotProcess, life: Life) -> None:
        """Discord down for the bot's REST calls (interactions still arrive and are acknowledged) for a while."""
        drop = self.rng.random() < 0.5
        life.outage = "connections refused" if drop else "503"
        with self.world.fake.rest_outage(status=503, drop=drop):
            await self._members_while_up(self.plan.outage_seconds, process)

    async def _members_while_up(self, uptime: float, process: BotProcess) -> None:
        """Commands at random gaps until `uptime` has passed; the last ones race the kill."""
        deadline = time.monotonic() + uptime
        while True:
            gap = self.rng.expovariate(1 / self.plan.command_gap)
            if len(self.sent) >= self.plan.jobs or time.monotonic() + gap >= deadline:
                await asyncio.sleep(max(0.0, deadline - time.monotonic()))
                return
            await asyncio.sleep(gap)
            if process.exited:
                raise AssertionError(f"the bot exited on its own:\n{process.log_text()[-3000:]}")
            await self._send(bot_up=True)
