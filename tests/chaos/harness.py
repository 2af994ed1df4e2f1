"""Crash-kill chaos: the real `python -m bot` process, SIGKILLed at random moments and restarted.

The fake Discord and the RunComfy emulator run in the caller's event loop on
127.0.0.1; the bot is a subprocess pointed at them through its settings, so a
kill is a real kill: no `finally`, no flush, no goodbye to the gateway. Members
send `/imagine` commands while the bot is up (a member sees it online), a few
while it is down, and some race the kill. Afterwards every command is checked
against what Discord shows, what the emulator was asked and what the database
holds. `tests/chaos/test_chaos.py` runs a small plan in CI; `bench/chaos.py`
runs long ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sqlite3
import statistics
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bot.emulator import Duration, Emulator, EmulatorConfig
from bot.jobs import RESTARTED_WHILE_SUBMITTING
from bot.model_spec import RATIO_VALUES
from tests.fakediscord import FakeChannel, FakeDiscord, FakeGuild, FakeInteraction, FakeMember, FakeMessage, Perm

RUNCOMFY_TOKEN = "rc-SECRET-chaos-token-51c9"
DONE = "✅ Done"
FAILED = "⚠️ Failed"
NOT_RESENT = "not sent again"
SUBJECTS = ("a lighthouse in a storm", "a fox in the snow", "a paper city", "a tea garden", "a glass whale")


@dataclass(frozen=True)
class ChaosPlan:
    """How hard to shake the bot. Times are seconds of real time."""

    jobs: int = 100
    min_kills: int = 20
    seed: int = 20261126
    uptime: tuple[float, float] = (0.3, 0.6)  # alive this long after the gateway READY, then SIGKILL
    startup_kill_share: float = 0.2  # share of restarts killed at a random moment before READY
    command_gap: float = 0.08  # mean gap between commands while the bot is up (exponential)
    down_command_share: float = 0.25  # chance that a member also tries while the bot is down
    channels: int = 4
    members: int = 8
    queue_time: Duration = field(default_factory=lambda: Duration.uniform(0.1, 0.5))
    run_time: Duration = field(default_factory=lambda: Duration.uniform(0.2, 0.8))
    ready_timeout: float = 30.0
    settle_timeout: float = 90.0
    # Discord outages: in these lives (counted from 0, while the bot is up) every REST call of the bot answers
    # 503 or has its connection cut for `outage_seconds`, while members keep sending commands; the bot is killed
    # a moment after Discord is back, so what finished meanwhile must be delivered by the next process.
    outage_lives: tuple[int, ...] = (4, 11)
    outage_seconds: float = 12.0


@dataclass
class Sent:
    """One `/imagine` a member sent, and whether a bot process was connected at that moment."""

    index: int
    prompt: str
    interaction: FakeInteraction
    bot_up: bool


@dataclass
class Life:
    """One bot process from spawn to kill."""

    number: int
    spawned_at: float
    login_after: float | None = None  # spawn -> first REST call (imports, settings, database open)
    ready_after: float | None = None  # spawn -> gateway READY: commands are answered again
    killed_after: float | None = None
    startup_kill: bool = False
    unfinished_at_spawn: int = 0
    exit_code: int | None = None
    outage: str | None = None  # the Discord outage this life went through, if any


@dataclass
class JobRow:
    id: int
    prompt: str
    state: str
    error: str | None
    delivery: str | None
    message_id: int | None
    request_id: str | None
    deliver_at: str | None


@dataclass
class ChaosReport:
    """The figures of one run; `problems` lists every broken promise, one line each."""

    plan: ChaosPlan
    lives: list[Life]
    commands: int = 0
    acknowledged: int = 0
    unacknowledged: int = 0
    unacknowledged_explained: int = 0  # the bot later posted why (its row existed, the ack never left)
    delivered: int = 0
    failed_not_resent: int = 0
    failed_not_resent_reached_runcomfy: int = 0
    lost: int = 0
    duplicate_final_edits: int = 0
    duplicate_result_messages: int = 0
    double_submits: int = 0
    replies_not_final: int = 0
    error_log_lines: int = 0
    duration: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def kills(self) -> int:
        return sum(1 for life in self.lives if life.killed_after is not None)

    @property
    def startup_kills(self) -> int:
        return sum(1 for life in self.lives if life.startup_kill and life.killed_after is not None)

    @property
    def recoveries(self) -> list[float]:
        return [life.ready_after for life in self.lives if life.ready_after is not None]

    @property
    def starts(self) -> list[float]:
        return [life.login_after for life in self.lives if life.login_after is not None]

    def figures(self) -> dict[str, Any]:
        recoveries, starts = self.recoveries, self.starts
        return {
            "seed": self.plan.seed,
            "kills": self.kills,
            "kills_during_startup": self.startup_kills,
            "discord_outages": [life.outage for life in self.lives if life.outage],
            "commands": self.commands,
            "acknowledged": self.acknowledged,
            "unacknowledged_while_down": self.unacknowledged,
            "unacknowledged_explained_later": self.unacknowledged_explained,
            "delivered": self.delivered,
            "failed_not_sent_again": self.failed_not_resent,
            "failed_not_sent_again_but_created_upstream": self.failed_not_resent_reached_runcomfy,
            "lost": self.lost,
            "delivered_twice": self.duplicate_final_edits + self.duplicate_result_messages,
            "double_submits": self.double_submits,
            "replies_not_final": self.replies_not_final,
            "error_log_lines": self.error_log_lines,
            "start_seconds": _stats(starts),
            "recovery_seconds": _stats(recoveries),
            "recovery_each": [round(value, 2) for value in recoveries],
            "duration_seconds": round(self.duration, 1),
        }

    def text(self) -> str:
        f = self.figures()
        start, recovery = f["start_seconds"], f["recovery_seconds"]
        lines = [
            f"chaos seed {f['seed']}: {f['kills']} SIGKILLs ({f['kills_during_startup']} during startup), "
            f"{f['commands']} /imagine commands in {f['duration_seconds']} s",
            f"  Discord outages of {self.plan.outage_seconds:.0f} s: {', '.join(f['discord_outages']) or 'none'}",
            f"  acknowledged {f['acknowledged']}: delivered {f['delivered']}, "
            f"failed 'not sent again' {f['failed_not_sent_again']} "
            f"({f['failed_not_sent_again_but_created_upstream']} of them had reached RunComfy)",
            f"  unacknowledged (sent while down or racing a kill) {f['unacknowledged_while_down']}, "
            f"{f['unacknowledged_explained_later']} of them explained later by a message",
            f"  lost {f['lost']} · delivered twice {f['delivered_twice']} · submits repeated {f['double_submits']} · "
            f"replies not showing a final state {f['replies_not_final']}",
            f"  process start (spawn -> login) {_fmt(start)}",
            f"  recovery (spawn -> gateway READY) {_fmt(recovery)}",
            f"  each recovery: {' '.join(str(value) for value in f['recovery_each'])}",
            f"  ERROR log lines {f['error_log_lines']}",
        ]
        lines += [f"  PROBLEM: {problem}" for problem in self.problems]
        return "\n".join(lines)


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    return {
        "min": round(ordered[0], 2),
        "median": round(statistics.median(ordered), 2),
        "p95": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 2),
        "max": round(ordered[-1], 2),
    }


def _fmt(stats: dict[str, float]) -> str:
    if not stats:
        return "n/a"
    return f"min {stats['min']} · median {stats['median']} · p95 {stats['p95']} · max {stats['max']} s"


@dataclass
class World:
    fake: FakeDiscord
    emulator: Emulator
    guild: FakeGuild
    channels: list[FakeChannel]
    members: list[FakeMember]


@contextlib.asynccontextmanager
async def world(plan: ChaosPlan) -> AsyncIterator[World]:
    """A fake Discord with one guild, `plan.channels` channels and `plan.members` members, and an emulator."""
    config = EmulatorConfig(queue_time=plan.queue_time, run_time=plan.run_time)
    async with FakeDiscord(seed=plan.seed) as fake, Emulator(config, token=RUNCOMFY_TOKEN, seed=plan.seed) as emu:
        guild = fake.add_guild("Chaos Server")
        channels = [guild.add_channel(f"chaos-{index}") for index in range(plan.channels)]
        # Server admins skip the per-member limits (cogs/limits.py), so every command becomes a job; nobody skips
        # the server's line, so jobs past its concurrency wait (state `waiting`) and are started by the bot.
        admins = guild.add_role("Admins", permissions=Perm.MANAGE_GUILD)
        members = [guild.add_member(f"member{index}", roles=[admins]) for index in range(plan.members)]
        yield World(fake, emu, guild, channels, members)


def bot_environment(world: World, workdir: Path, **extra: str) -> dict[str, str]:
    """A clean environment (no inherited tokens, no .env: cwd is `workdir`) pointing the bot at the fakes."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("RUNCOMFY_", "DISCORD_"))}
    environment.update(
        {
            "DISCORD_TOKEN": world.fake.bot_token,
            "DISCORD_API_BASE_URL": world.fake.rest_base,
            "DISCORD_GATEWAY_URL": world.fake.gateway_url,
            "DISCORD_GUILD_IDS": str(world.guild.id),
            "RUNCOMFY_BASE_URL": world.emulator.url,
            "RUNCOMFY_API_TOKEN": RUNCOMFY_TOKEN,
            "RUNCOMFY_REQUESTS_PER_SECOND": "200",
            "DATABASE_PATH": str(workdir / "imagine.sqlite3"),
            "POLL_MIN_INTERVAL_SECONDS": "0.05",
            "POLL_MAX_INTERVAL_SECONDS": "0.25",
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
    )
    environment.update(extra)
    return environment


class BotProcess:
    """`python -m bot run` with its output in a log file; one per life."""

    def __init__(self, workdir: Path, environment: dict[str, str], number: int) -> None:
        self.log_path = workdir / f"bot-{number:03d}.log"
        self._environment = environment
        self._workdir = workdir
        self._log: IO[bytes] | None = None
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._log = self.log_path.open("wb")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "run",
            cwd=self._workdir, env=self._environment, stdout=self._log, stderr=self._log,
        )  # fmt: skip

    @property
    def exited(self) -> bool:
        return self.process is not None and self.process.returncode is not None

    async def stop(self, sig: int = signal.SIGKILL) -> int | None:
        """Send `sig` (SIGKILL by default: no cleanup runs) and wait for the exit."""
        if self.process is None:
            return None
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)
        try:
            code = await asyncio.wait_for(self.process.wait(), 15)
        except TimeoutError:
            self.process.kill()
            code = await self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def read_jobs(database: Path) -> list[JobRow]:
    """Every job row, read with plain sqlite3 (not the store under test)."""
    if not database.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)) as db:
        rows = db.execute(
            "SELECT id, prompt, state, error, delivery, message_id, request_id, deliver_at FROM jobs ORDER BY id"
        ).fetchall()
    return [JobRow(*row) for row in rows]


class ChaosRun:
    """Runs one plan in `workdir`; `await run()` returns the report."""

    def __init__(self, plan: ChaosPlan, world: World, workdir: Path) -> None:
        self.plan = plan
        self.world = world
        self.workdir = workdir
        self.database = workdir / "imagine.sqlite3"
        self.environment = bot_environment(world, workdir)
        self.rng = random.Random(plan.seed)  # a reproducible schedule
        self.sent: list[Sent] = []
        self.lives: list[Life] = []
        self.logs: list[str] = []
        self._connected_identify = -1

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
            await self._settle(process)
        finally:
            await self._end(process, life, signal.SIGTERM, killed=False)
        report = self._verify()
        report.duration = time.monotonic() - began
        return report

    async def _spawn(self) -> tuple[BotProcess, Life]:
        life = Life(len(self.lives), time.monotonic())
        life.unfinished_at_spawn = sum(
            1 for row in await asyncio.to_thread(read_jobs, self.database) if row.state in _UNFINISHED
        )
        self.lives.append(life)
        process = BotProcess(self.workdir, self.environment, life.number)
        self._requests_before = len(self.world.fake.requests)
        self._identify_before = self.world.fake.gateway.identify_count
        await process.start()
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

    async def _send(self, *, bot_up: bool) -> None:
        index = len(self.sent)
        prompt = f"chaos {index:03d}: {self.rng.choice(SUBJECTS)}"
        member = self.rng.choice(self.world.members)
        channel = self.rng.choice(self.world.channels)
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

    async def _settle(self, process: BotProcess) -> None:
        """Until every acknowledged reply shows a final state and the database has nothing left to do."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.plan.settle_timeout
        while True:
            if process.exited:
                raise AssertionError(f"the bot exited on its own:\n{process.log_text()[-3000:]}")
            rows = await asyncio.to_thread(read_jobs, self.database)
            busy = [row for row in rows if row.state in _UNFINISHED or _unannounced(row)]
            waiting = [sent for sent in self.sent if sent.interaction.acked and _final_text(sent) is None]
            pending = [sent for sent in self.sent if not sent.interaction.acked and not sent.interaction.failed]
            if not busy and not waiting and not pending:
                await asyncio.sleep(1.0)  # room for a late duplicate edit to show up
                return
            if loop.time() > deadline:
                return  # the verification names what never settled
            await asyncio.sleep(0.1)

    # -- the verdict --------------------------------------------------------------

    def _verify(self) -> ChaosReport:
        world = self.world
        report = ChaosReport(self.plan, self.lives, commands=len(self.sent))
        rows = read_jobs(self.database)
        by_prompt: dict[str, list[JobRow]] = {}
        for row in rows:
            by_prompt.setdefault(row.prompt, []).append(row)
        known = {sent.prompt for sent in self.sent}
        for row in rows:
            if row.prompt not in known:
                report.problems.append(f"job {row.id} has a prompt nobody sent: {row.prompt!r}")
            if row.state in _UNFINISHED:
                report.problems.append(f"job {row.id} still {row.state} at the end")
        messages = [message for channel in world.channels for message in channel.messages]
        for sent in self.sent:
            self._verify_one(sent, by_prompt.get(sent.prompt, []), messages, report)
        report.error_log_lines = sum(1 for log in self.logs for line in log.splitlines() if " ERROR " in line)
        return report

    def _verify_one(self, sent: Sent, jobs: list[JobRow], messages: list[FakeMessage], report: ChaosReport) -> None:
        emulator = self.world.emulator
        interaction = sent.interaction
        submits = emulator.submits_for(sent.prompt)
        if submits > 1:
            report.double_submits += submits - 1
            report.problems.append(f"#{sent.index}: submitted {submits} times")
        if len(jobs) > 1:
            report.problems.append(f"#{sent.index}: {len(jobs)} job rows")
        job = jobs[0] if jobs else None
        results = [m for m in messages if job is not None and _shows_result_of(m, job.id)]
        if not interaction.acked:
            report.unacknowledged += 1
            if submits:
                report.problems.append(f"#{sent.index}: never acknowledged, yet sent to RunComfy")
            if job is not None and job.state != "failed":
                report.problems.append(f"#{sent.index}: never acknowledged, yet its job is {job.state}")
            if any(sent.prompt[:40] in m.content or _mentions_job(m, sent.prompt) for m in messages):
                report.unacknowledged_explained += 1
            return
        report.acknowledged += 1
        reply = interaction.original_message
        final = _final_text(sent)
        if reply is None or job is None:
            report.lost += 1
            shown = "" if reply is None else f": {'ephemeral ' if reply.ephemeral else ''}{reply.content[:100]!r}"
            report.problems.append(
                f"#{sent.index}: acknowledged but {'no reply' if reply is None else 'no job row'}{shown}"
            )
            return
        done_versions = sum(1 for version in reply.versions if DONE in version.content)
        if done_versions > 1:
            report.duplicate_final_edits += done_versions - 1
            report.problems.append(f"#{sent.index}: the reply was edited to its image {done_versions} times")
        extra_results = [m for m in results if m is not reply]
        if extra_results:
            report.duplicate_result_messages += len(extra_results)
            report.problems.append(f"#{sent.index}: {len(extra_results)} extra result message(s)")
        if final == DONE and job.state == "delivered":
            report.delivered += 1
            if len(reply.attachments) != 1 or submits != 1:
                report.problems.append(
                    f"#{sent.index}: delivered with {len(reply.attachments)} attachments, {submits} submits"
                )
        elif final == FAILED and job.state == "failed" and _failed_by_restart(job.error):
            report.failed_not_resent += 1
            report.failed_not_resent_reached_runcomfy += submits
            if (job.error or "")[:40] not in str(reply.embeds):
                report.problems.append(f"#{sent.index}: the reply does not say the restart stopped it")
        elif final is None:
            report.replies_not_final += 1
            report.lost += 1
            report.problems.append(
                f"#{sent.index}: job {job.id} is {job.state}, the reply still shows {reply.content[:80]!r}"
                f"{' (thinking...)' if reply.loading else ''}"
            )
        else:
            report.problems.append(f"#{sent.index}: job {job.id} {job.state} ({job.error}), reply shows {final}")

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join("\n".join(log.splitlines()[-lines:]) for log in self.logs[-2:])


_UNFINISHED = frozenset({"waiting", "submitting", "in_queue", "in_progress", "completed", "delivering"})


def _failed_by_restart(error: str | None) -> bool:
    """The honest end of a job a kill caught before RunComfy confirmed it: failed, never sent (again).

    RESTARTED_WHILE_SUBMITTING when it may have reached RunComfy; the waiting line (bot/jobs/line.py) has its own
    sentence for a job that never left the bot.
    """
    return error == RESTARTED_WHILE_SUBMITTING or (error or "").startswith("The bot restarted")


def _unannounced(row: JobRow) -> bool:
    """A failed or cancelled job whose end is still owed to its member (not shown yet, nor given up)."""
    return row.state in ("failed", "cancelled") and row.deliver_at is not None


def _final_text(sent: Sent) -> str | None:
    reply = sent.interaction.original_message
    if reply is None or reply.loading:
        return None
    for marker in (DONE, FAILED):
        if marker in reply.content:
            return marker
    return None


def _shows_result_of(message: FakeMessage, job_id: int) -> bool:
    return any(attachment.filename.startswith(f"imagine-{job_id}.") for attachment in message.attachments)


def _mentions_job(message: FakeMessage, prompt: str) -> bool:
    return any(prompt[:40] in str(embed.get("description", "")) for embed in message.embeds)


def iter_log_lines(logs: list[str]) -> Iterator[str]:
    for log in logs:
        yield from log.splitlines()
