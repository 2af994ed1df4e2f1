"""bench/scale.py --processes N: N `python -m bot run` children on PostgreSQL, one shard each, and their figures.

Each child is bench/instrumented_bot.py (the bot plus a 10 ms sleeper writing its lateness to a file); all share
one database, so one request budget, or with `--own-budgets` have one each.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from bench.common import free_port, healthy, percentile
from bench.scale_bots import TOKEN, Bots, limits
from bench.scale_gauges import cpu_seconds, rss_mb
from bot.emulator import Emulator
from storage.postgres.jobs import PostgresJobStore
from tests.chaos.bot_process import BotProcess, runcomfy_and_discord_environment
from tests.fakediscord import FakeDiscord, FakeGuild, shard_of
from tests.pgserver import PostgresServer, find_bindir

ROOT = Path(__file__).resolve().parent.parent
LAG_METRIC = "imagine_event_loop_lag_seconds"


@dataclass
class Child:
    """One `python -m bot run` child, its health port, its lag file and its database."""

    process: BotProcess
    port: int
    lag_file: Path
    database: int  # index into Children.pools
    rss: list[float] = field(default_factory=list)
    metrics_before: dict[float, float] = field(default_factory=dict)
    cpu_before: float = 0.0

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass
class Children:
    """N bot processes on PostgreSQL: one database shared by all, or one each (`--own-budgets`)."""

    children: list[Child]
    pools: list[asyncpg.Pool]
    session: aiohttp.ClientSession
    count: int
    granted_before: float = 0.0
    began_at: float = 0.0

    def process_of(self, guild: FakeGuild) -> int:
        return shard_of(guild.id, self.count)

    async def states(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for pool in self.pools:
            for state, number in await pool.fetch("SELECT state, count(*) FROM jobs GROUP BY state"):
                counts[state] = counts.get(state, 0) + number
        return counts

    async def granted(self) -> float:
        """Tokens every budget row has handed out since it was created (storage/postgres/budget.py)."""
        total = 0.0
        for pool in self.pools:
            total += await pool.fetchval("SELECT COALESCE(sum(granted), 0) FROM request_budget") or 0.0
        return total

    async def lag_buckets(self, child: Child) -> dict[float, float]:
        """The child's cumulative loop-lag histogram from /metrics: upper bound (s) -> count."""
        async with self.session.get(f"http://127.0.0.1:{child.port}/metrics") as response:
            text = await response.text()
        buckets: dict[float, float] = {}
        for family in text_string_to_metric_families(text):
            if family.name == LAG_METRIC:
                for sample in family.samples:
                    if sample.name == f"{LAG_METRIC}_bucket":
                        buckets[float(sample.labels["le"])] = sample.value
        return buckets

    async def begin(self) -> None:
        for child in self.children:
            child.metrics_before = await self.lag_buckets(child)
            child.cpu_before = cpu_seconds(child.pid)
        self.granted_before = await self.granted()
        self.began_at = time.time()

    def sample(self) -> None:
        for child in self.children:
            child.rss.append(rss_mb(child.pid))

    async def end(self, wall: float) -> dict[str, Any]:
        ended_at = time.time()
        granted = await self.granted() - self.granted_before
        await asyncio.sleep(1.5)  # the lag files are written once a second
        per_process: list[dict[str, float]] = []
        pooled: list[float] = []
        for child in self.children:
            lags = read_lags(child.lag_file, self.began_at, ended_at)
            pooled += lags
            after = await self.lag_buckets(child)
            per_process.append(
                {
                    "lag p99 ms": 1000 * percentile(lags, 99),
                    "lag max ms": 1000 * max(lags, default=float("nan")),
                    "/metrics p99 bucket ms": 1000 * p99_bucket(child.metrics_before, after),
                    "RSS MB": max(child.rss),
                    "CPU": (cpu_seconds(child.pid) - child.cpu_before) / wall,
                }
            )
        return {
            "lag p50 ms": 1000 * percentile(pooled, 50),
            "lag p99 ms": max(p["lag p99 ms"] for p in per_process),
            "lag max ms": max(p["lag max ms"] for p in per_process),
            "lag p99 ms per process": [round(p["lag p99 ms"], 2) for p in per_process],
            "/metrics lag p99 bucket ms per process": [p["/metrics p99 bucket ms"] for p in per_process],
            "RSS MB": max(p["RSS MB"] for p in per_process),
            "RSS MB per process": [round(p["RSS MB"], 1) for p in per_process],
            "CPU share of one core per process": [round(p["CPU"], 3) for p in per_process],
            "budget tokens granted/s (database)": granted / wall,
            "budgets": len(self.pools),
        }


def read_lags(path: Path, since: float, until: float) -> list[float]:
    """The sleeper's lateness (s) sampled between the two unix times."""
    lags = []
    for line in path.read_text().splitlines():
        stamp, late = line.split()
        if since <= float(stamp) <= until:
            lags.append(float(late))
    return lags


def p99_bucket(before: dict[float, float], after: dict[float, float]) -> float:
    """The upper bound (s) of the histogram bucket holding the 99th percentile of what was observed in between."""
    bounds = sorted(after)
    counts = [after[bound] - before.get(bound, 0.0) for bound in bounds]
    total = counts[-1] if counts else 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if total and count >= 0.99 * total:
            return bound
    return float("nan")


@contextlib.asynccontextmanager
async def children(
    args: argparse.Namespace, fake: FakeDiscord, emulator: Emulator, guilds: list[FakeGuild]
) -> AsyncIterator[Bots]:
    server = await asyncio.to_thread(PostgresServer.start, find_bindir())
    try:
        async with contextlib.AsyncExitStack() as stack:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="scale-")))
            urls = [
                await stack.enter_async_context(server.database())
                for _ in range(args.processes if args.own_budgets else 1)
            ]
            for url in urls:  # migrated, with every server let run everything at once
                async with await PostgresJobStore.open(url) as store:
                    for guild in guilds:
                        await store.guilds.update(guild.id, now=datetime.now(UTC), **limits(args))
            pools = [await stack.enter_async_context(asyncpg.create_pool(url, min_size=1, max_size=2)) for url in urls]
            session = await stack.enter_async_context(aiohttp.ClientSession())
            environment = runcomfy_and_discord_environment(
                fake, emulator.url, TOKEN, [guild.id for guild in guilds]
            ) | {
                "RUNCOMFY_REQUESTS_PER_SECOND": f"{args.budget:g}",
                "SHARD_COUNT": str(args.processes),
                "LOG_LEVEL": "WARNING",
                "BUDGET_IMAGES_PER_DAY": "0",  # the benchmark measures the bot, not the operator's caps
                "BUDGET_USD_PER_DAY": "0",
                "BUDGET_USD_PER_MONTH": "0",
                "PYTHONPATH": str(ROOT),  # for bench.instrumented_bot; cwd is the scratch folder
            }
            bots = Children([], pools, session, args.processes)
            for index in range(args.processes):
                port, lag_file = free_port(), workdir / f"lag-{index}.txt"
                database = index if args.own_budgets else 0
                extra = {"DATABASE_URL": urls[database], "SHARD_IDS": str(index), "HEALTH_PORT": str(port)}
                command = ("-m", "bench.instrumented_bot", str(lag_file))
                process = BotProcess(workdir, environment | extra, index, command=command)
                await process.start()
                bots.children.append(Child(process, port, lag_file, database))
            try:
                for child in bots.children:
                    assert child.process.process is not None
                    try:
                        await healthy(child.process.process, child.port)
                    except (RuntimeError, TimeoutError):
                        log = child.process.log_text()[-3000:]
                        raise RuntimeError(f"bot {child.pid} not healthy:\n{log}") from None
                yield bots
            finally:
                for child in bots.children:
                    await child.process.stop(signal.SIGTERM)
    finally:
        await asyncio.to_thread(server.stop)
