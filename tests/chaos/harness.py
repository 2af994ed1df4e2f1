"""Crash-kill chaos: the real `python -m bot` process, SIGKILLed at random moments and restarted.

The fake Discord and the RunComfy emulator run in the caller's event loop on
127.0.0.1; the bot is a subprocess pointed at them through its settings, so a
kill is a real kill: no `finally`, no flush, no goodbye to the gateway. Members
send `/imagine` commands while the bot is up (a member sees it online), a few
while it is down, and some race the kill. Afterwards every command is checked
against what Discord shows, what the emulator was asked and what the database
holds. `tests/chaos/test_chaos.py` runs a small plan in CI; `bench/chaos.py`
runs long ones.

`ProcessesChaosRun` does the same to several processes sharing one PostgreSQL
database (`plan.processes`, one Discord shard each, servers spread over the
shards): one process at a time is killed and restarted while the others keep
running, and every job the dead process held is watched in the database until
another process (or its own restart) has claimed it. That delay is what the
leases promise ("taken over within the lease time"); the report prints it
(p50, p95, how many within the lease) and a job never taken over is a broken
promise, but the delay itself is not asserted: a slow CI machine must not fail
a test of correctness.
`tests/chaos/test_processes.py` runs it in CI, `bench/chaos.py --processes 3`
runs long ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import sqlite3
import statistics
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import asyncpg

from bot.emulator import Duration, Emulator, EmulatorConfig
from bot.jobs import RESTARTED_WHILE_SUBMITTING
from bot.model_spec import RATIO_VALUES
from tests.fakediscord import (
    FakeChannel,
    FakeDiscord,
    FakeGuild,
    FakeInteraction,
    FakeMember,
    FakeMessage,
    Perm,
    shard_of,
)

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
    outage_lives: tuple[int, ...] = (4, 11)  # one process only
    outage_seconds: float = 20.0  # "tens of seconds": longer than a delivery's first few retries
    # Several processes (ProcessesChaosRun): `processes` bots on one PostgreSQL database, process i running shard i
    # of `processes`, and `guilds` servers spread over the shards (server g on shard g % processes); `channels` and
    # `members` are then per server. One process at a time is killed, `uptime` after every process is up again.
    processes: int = 1
    guilds: int = 1
    lease_seconds: float = 3.0  # LEASE_SECONDS of every process
    # How long a killed process stays down before it is started again (a service manager's restart delay): the
    # longer, the more of its jobs the other processes take over before its restart adopts the rest.
    down_time: tuple[float, float] = (0.0, 0.0)


# The plan of tests/chaos/test_processes.py (bench/chaos.py --processes 3 runs it longer). Jobs live a few
# seconds, so that most kills find some in every stage (waiting in a server's line, queued, running, being
# delivered); 6 servers, 2 on each shard; half the restarts are killed again during their own startup.
THREE_PROCESSES = ChaosPlan(
    processes=3,
    guilds=6,
    channels=2,
    members=3,
    jobs=100,
    min_kills=10,
    lease_seconds=3.0,
    uptime=(0.2, 1.2),
    down_time=(0.0, 1.0),  # restarted at once, or after the other processes have taken some of its jobs over
    command_gap=0.3,
    startup_kill_share=0.5,
    queue_time=Duration.uniform(0.3, 2.0),
    run_time=Duration.uniform(0.5, 1.5),
    ready_timeout=30.0,
    settle_timeout=60.0,
)


@dataclass
class Sent:
    """One `/imagine` a member sent, and whether a bot process was connected at that moment."""

    index: int
    prompt: str
    interaction: FakeInteraction
    bot_up: bool  # the process running the server's shard was up


@dataclass
class Life:
    """One bot process from spawn to kill."""

    number: int
    spawned_at: float
    slot: int = 0  # with several processes: which one (it runs shard `slot`)
    pid: int | None = None
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
    deliver_at: str | datetime | None  # TEXT in SQLite, timestamptz in PostgreSQL; only its presence matters


@dataclass
class TakeOver:
    """A job a SIGKILL left held by the dead process, and when a live process was seen holding it instead."""

    kill: int  # the number of the life that was killed
    job_id: int
    state: str  # when it was orphaned
    delay: float | None = None  # seconds from the SIGKILL until the database named another holder; None: never
    by_restart: bool = False  # the claimer was the killed process's own restart (it adopts its predecessor's jobs)


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
    takeovers: list[TakeOver] = field(default_factory=list)  # several processes only
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

    @property
    def take_over_delays(self) -> list[float]:
        return [takeover.delay for takeover in self.takeovers if takeover.delay is not None]

    def figures(self) -> dict[str, Any]:
        recoveries, starts = self.recoveries, self.starts
        several = {
            "orphaned_jobs": len(self.takeovers),
            "taken_over_by_the_restart": sum(1 for takeover in self.takeovers if takeover.by_restart),
            "never_taken_over": sum(1 for takeover in self.takeovers if takeover.delay is None),
            "take_over_seconds": _stats(self.take_over_delays),
            "lease_seconds": self.plan.lease_seconds,
        }
        return {
            "seed": self.plan.seed,
            "processes": self.plan.processes,
            **(several if self.plan.processes > 1 else {}),
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
        several = self.plan.processes > 1
        lines = [
            f"chaos seed {f['seed']}: {f'{self.plan.processes} processes, ' if several else ''}"
            f"{f['kills']} SIGKILLs ({f['kills_during_startup']} during startup), "
            f"{f['commands']} /imagine commands in {f['duration_seconds']} s",
        ]
        if several:
            lines.append(
                f"  orphaned jobs {f['orphaned_jobs']} ({f['taken_over_by_the_restart']} claimed by the killed "
                f"process's restart, the rest by another process), never taken over {f['never_taken_over']}"
            )
            delays = f["take_over_seconds"]
            shown = f"p50 {delays['median']} · p95 {delays['p95']} · max {delays['max']} s" if delays else "n/a"
            lines.append(
                f"  take-over (SIGKILL -> claimed): {shown}; lease {f['lease_seconds']:g} s from the last renewal, "
                "claimed 0.2 s after it runs out (clock skew)"
            )
        else:
            lines.append(
                f"  Discord outages of {self.plan.outage_seconds:.0f} s: {', '.join(f['discord_outages']) or 'none'}"
            )
        lines += [
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


def assert_promises_kept(report: ChaosReport, run: Chaos) -> None:
    """What every chaos test asserts: each acknowledged command delivered once or honestly failed, nothing
    submitted twice, nothing left behind, enough commands met a running bot to prove it, every kill made."""
    plan = report.plan
    assert not report.problems, f"{report.text()}\n--- last bot logs ---\n{run.log_tail()}"
    assert report.kills >= plan.min_kills
    assert report.commands == plan.jobs
    assert report.lost == 0
    assert report.duplicate_final_edits == report.duplicate_result_messages == 0
    assert report.double_submits == 0
    assert report.replies_not_final == 0
    assert report.acknowledged == report.delivered + report.failed_not_resent
    assert report.acknowledged >= plan.jobs * 0.6, "too few commands met a running bot to prove anything"


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
    guilds: list[FakeGuild]
    channels: list[FakeChannel]  # of every server
    members: list[FakeMember]  # of every server

    @property
    def guild(self) -> FakeGuild:
        return self.guilds[0]

    def channels_of(self, guild: FakeGuild) -> list[FakeChannel]:
        return [channel for channel in self.channels if channel.guild is guild]

    def members_of(self, guild: FakeGuild) -> list[FakeMember]:
        return [member for member in self.members if member.guild is guild]


@contextlib.asynccontextmanager
async def world(plan: ChaosPlan) -> AsyncIterator[World]:
    """A fake Discord with `plan.guilds` servers (each with `plan.channels` channels and `plan.members` members,
    server g on shard g of `plan.processes` when there are several), and an emulator."""
    config = EmulatorConfig(queue_time=plan.queue_time, run_time=plan.run_time)
    async with FakeDiscord(seed=plan.seed) as fake, Emulator(config, token=RUNCOMFY_TOKEN, seed=plan.seed) as emu:
        guilds, channels, members = [], [], []
        for index in range(plan.guilds):
            if plan.processes > 1:
                guild = fake.add_guild(f"Chaos Server {index}", on_shard=(index % plan.processes, plan.processes))
            else:
                guild = fake.add_guild("Chaos Server" if plan.guilds == 1 else f"Chaos Server {index}")
            guilds.append(guild)
            channels += [guild.add_channel(f"chaos-{number}") for number in range(plan.channels)]
            # Server admins skip the per-member limits (bot/jobs/limits.py), so every command becomes a job; nobody
            # skips the server's line, so jobs past its concurrency wait (state `waiting`) and are started by the bot.
            admins = guild.add_role("Admins", permissions=Perm.MANAGE_GUILD)
            members += [guild.add_member(f"member{number}", roles=[admins]) for number in range(plan.members)]
        yield World(fake, emu, guilds, channels, members)


def bot_environment(world: World, workdir: Path, **extra: str) -> dict[str, str]:
    """A clean environment (no inherited tokens, no .env: cwd is `workdir`) pointing the bot at the fakes, with a
    SQLite file in `workdir`, quick polling, and neither a request budget nor the operator's caps holding the
    chaos back."""
    environment = runcomfy_and_discord_environment(
        world.fake, world.emulator.url, RUNCOMFY_TOKEN, [guild.id for guild in world.guilds]
    )
    environment.update(
        {
            "RUNCOMFY_REQUESTS_PER_SECOND": "200",
            "DATABASE_PATH": str(workdir / "imagine.sqlite3"),
            "POLL_MIN_INTERVAL_SECONDS": "0.05",
            "POLL_MAX_INTERVAL_SECONDS": "0.25",
            "LOG_LEVEL": "INFO",
            # The operator's caps (200 images a day by default) would refuse the long runs' later commands.
            "BUDGET_IMAGES_PER_DAY": "0",
            "BUDGET_USD_PER_DAY": "0",
            "BUDGET_USD_PER_MONTH": "0",
        }
    )
    environment.update(extra)
    return environment


def runcomfy_and_discord_environment(
    fake: FakeDiscord, runcomfy_url: str, runcomfy_token: str, guild_ids: Sequence[int]
) -> dict[str, str]:
    """The environment of a `python -m bot run` child: this process's variables less every token and setting of
    the bot's services, plus the fake Discord (commands synced to `guild_ids`) and the emulator at `runcomfy_url`.
    Everything else keeps its production default (benchmarks add their own budget and database)."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("RUNCOMFY_", "DISCORD_"))}
    environment.update(
        {
            "DISCORD_TOKEN": fake.bot_token,
            "DISCORD_API_BASE_URL": fake.rest_base,
            "DISCORD_GATEWAY_URL": fake.gateway_url,
            "DISCORD_GUILD_IDS": ",".join(str(guild_id) for guild_id in guild_ids),
            "RUNCOMFY_BASE_URL": runcomfy_url,
            "RUNCOMFY_API_TOKEN": runcomfy_token,
            "PYTHONUNBUFFERED": "1",
        }
    )
    return environment


class BotProcess:
    """`python -m bot run` (or `command`, a module that runs the bot) with its output in a log file; one per life."""

    def __init__(
        self,
        workdir: Path,
        environment: dict[str, str],
        number: int,
        *,
        command: Sequence[str] = ("-m", "bot", "run"),
    ) -> None:
        self.log_path = workdir / f"bot-{number:03d}.log"
        self._environment = environment
        self._workdir = workdir
        self._command = tuple(command)
        self._log: IO[bytes] | None = None
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._log = self.log_path.open("wb")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, *self._command,
            cwd=self._workdir, env=self._environment, stdout=self._log, stderr=self._log,
        )  # fmt: skip

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("not started")
        return self.process.pid

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


_JOB_COLUMNS = "id, prompt, state, error, delivery, message_id, request_id, deliver_at"


def read_jobs(database: Path) -> list[JobRow]:
    """Every job row, read with plain sqlite3 (not the store under test)."""
    if not database.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)) as db:
        rows = db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs ORDER BY id").fetchall()  # noqa: S608 - constants
    return [JobRow(*row) for row in rows]


async def read_jobs_postgres(pool: asyncpg.Pool) -> list[JobRow]:
    """Every job row, read with plain asyncpg (not the store under test)."""
    rows = await pool.fetch(f"SELECT {_JOB_COLUMNS} FROM jobs ORDER BY id")  # noqa: S608 - constants
    return [JobRow(*row) for row in rows]


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

    def _verify(self, rows: list[JobRow]) -> ChaosReport:
        world = self.world
        report = ChaosReport(self.plan, self.lives, commands=len(self.sent))
        by_prompt: dict[str, list[JobRow]] = {}
        for row in rows:
            by_prompt.setdefault(row.prompt, []).append(row)
        known = {sent.prompt for sent in self.sent}
        for row in rows:
            if row.prompt not in known:
                report.problems.append(f"job {row.id} has a prompt nobody sent: {row.prompt!r}")
            if row.state in _UNFINISHED:
                report.problems.append(f"job {row.id} still {row.state} at the end")
            elif _unannounced(row):
                report.problems.append(f"job {row.id} {row.state} at the end, its notice still owed")
        messages = [message for channel in world.channels for message in channel.messages]
        for sent in self.sent:
            self._verify_one(sent, by_prompt.get(sent.prompt, []), messages, report)
        report.error_log_lines = sum(1 for line in iter_log_lines(self.logs) if _is_error_line(line))
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
        life.unfinished_at_spawn = sum(1 for row in await self.read_jobs() if row.state in _UNFINISHED)
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


def _is_error_line(line: str) -> bool:
    """An ERROR record, in either LOG_FORMAT."""
    return " ERROR " in line or (line.startswith("{") and '"level": "ERROR"' in line)
