"""What bench/scale.py measures with: request stamps, the limiter's releases, RSS, CPU, loop lag, probe acks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
from pathlib import Path
from typing import Any

from aiohttp import web

from bot.app import ImagineBot
from bot.emulator import Emulator
from bot.emulator_config import API_ROUTES
from tests.fakediscord import FakeChannel, FakeInteraction, FakeMember

Place = tuple[FakeMember, FakeChannel]


class CountingEmulator(Emulator):
    """The emulator, noting the loop time of every API call (not file downloads)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stamps: list[float] = []

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if (request.match_info.route.name or "") in API_ROUTES:
            self.stamps.append(asyncio.get_running_loop().time())
        return await super()._middleware(request, handler)


def watch_limiter(bot: ImagineBot) -> list[float]:
    """Loop times at which the bot's own RunComfy limiter lets a request go (instrumentation only)."""
    assert bot.jobs is not None
    limiter = bot.jobs.client._limiter  # the one shared limiter built in setup_hook
    assert limiter is not None
    released: list[float] = []
    original = limiter.acquire
    loop = asyncio.get_running_loop()

    async def acquire(amount: float = 1) -> None:
        await original(amount)
        released.append(loop.time())

    limiter.acquire = acquire  # type: ignore[method-assign]  # instrumentation only
    return released


def rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def max_in_window(stamps: list[float], window: float = 1.0) -> int:
    best, start = 0, 0
    for end, stamp in enumerate(stamps):
        while stamp - stamps[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


async def sample_lag(lags: list[float], stop: asyncio.Event, period: float = 0.01) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        before = loop.time()
        await asyncio.sleep(period)
        lags.append(loop.time() - before - period)


async def probe_acks(acks: list[tuple[Place, float]], stop: asyncio.Event, every: float, places: list[Place]) -> None:
    """A probe /imagine every `every` seconds; (where, INTERACTION_CREATE -> acknowledgement) of each."""
    index = 0
    pending: list[tuple[Place, FakeInteraction]] = []
    while not stop.is_set():
        place = places[index % len(places)]
        member, channel = place
        pending.append((place, await member.run_command("imagine", channel, prompt=f"probe {index}")))
        index += 1
        await asyncio.sleep(every)
    for place, interaction in pending:
        with contextlib.suppress(TimeoutError):
            await interaction.wait_until_acked(timeout=10)
        if interaction.acked_at is not None:
            acks.append((place, interaction.acked_at - interaction.created_at))
