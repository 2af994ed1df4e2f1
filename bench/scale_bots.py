"""The bot side of bench/scale.py: what it asks of the bots, and the one ImagineBot in this process.

The child processes on PostgreSQL (`--processes N`) are bench/scale_processes.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from bench.common import bot_settings, out_dir, percentile, remove_database
from bench.scale_gauges import max_in_window, peak_rss_mb, rss_mb, sample_lag, watch_limiter
from bot.app import ImagineBot
from bot.emulator import Emulator
from tests.fakediscord import FakeDiscord, FakeGuild
from tests.fakediscord.runner import run_bot

TOKEN = "bench-scale-token"  # noqa: S105 (the emulator's stand-in token)


class Bots(Protocol):
    """The bot side of the benchmark: one bot in this process, or child processes."""

    count: int  # processes

    def process_of(self, guild: FakeGuild) -> int:
        """Which process receives `guild`'s commands."""
        ...

    async def states(self) -> dict[str, int]:
        """Jobs per state, over every database."""
        ...

    async def begin(self) -> None:
        """The measured window starts now."""
        ...

    def sample(self) -> None:
        """Once a second during the window (RSS)."""
        ...

    async def end(self, wall: float) -> dict[str, Any]:
        """The window ended `wall` seconds after `begin`: this side's figures (lag, RSS, CPU, budget)."""
        ...


@dataclass
class InProcess:
    """One ImagineBot on this loop, as bench/scale.py always measured it."""

    bot: ImagineBot
    released: list[float]
    count: int = 1
    lags: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None
    _began: tuple[float, float] = (0.0, 0.0)

    def process_of(self, guild: FakeGuild) -> int:
        return 0

    async def states(self) -> dict[str, int]:
        assert self.bot.store is not None
        return {state.value: count for state, count in (await self.bot.store.count_by_state()).items()}

    async def begin(self) -> None:
        self._task = asyncio.create_task(sample_lag(self.lags, self._stop))
        self._began = (time.process_time(), asyncio.get_running_loop().time())

    def sample(self) -> None:
        self.rss.append(rss_mb())

    async def end(self, wall: float) -> dict[str, Any]:
        self._stop.set()
        if self._task is not None:
            await self._task
        cpu_before, loop_before = self._began
        let_through = [s for s in self.released if loop_before <= s <= loop_before + wall]
        return {
            "lag p50 ms": 1000 * percentile(self.lags, 50),
            "lag p99 ms": 1000 * percentile(self.lags, 99),
            "lag max ms": 1000 * max(self.lags),
            "RSS MB": max(self.rss),
            "peak RSS MB": peak_rss_mb(),
            "CPU share of one core": (time.process_time() - cpu_before) / wall,
            "let through by our limiter in busiest 1 s": max_in_window(let_through),
            "let through by our limiter in busiest 10 s": max_in_window(let_through, 10.0),
        }


@contextlib.asynccontextmanager
async def in_process(
    args: argparse.Namespace, fake: FakeDiscord, emulator: Emulator, guilds: list[FakeGuild]
) -> AsyncIterator[Bots]:
    database = out_dir() / "scale.sqlite3"
    remove_database(database)
    guild_ids = [guild.id for guild in guilds]
    settings = bot_settings(fake, emulator.url, TOKEN, database, guild_ids, runcomfy_requests_per_second=args.budget)
    bot = ImagineBot(settings, guild_ready_timeout=0.05)
    async with run_bot(fake, bot):
        assert bot.jobs is not None
        assert bot.store is not None
        # One big server that lets everyone run at once: every job goes upstream, none waits in the bot.
        for guild in guilds:
            await bot.store.guilds.update(guild.id, now=bot.jobs.clock.now(), **limits(args))
        yield InProcess(bot, watch_limiter(bot))


def limits(args: argparse.Namespace) -> dict[str, int]:
    """Server settings that let every member run everything at once: no job waits in the bot's line."""
    return {"member_concurrent": args.jobs, "member_daily": 10 * args.jobs, "guild_concurrent": 2 * args.jobs}
