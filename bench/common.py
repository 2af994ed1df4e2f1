"""What every benchmark shares: a virtual clock, a counting rate limiter, percentiles, tables, bench/out/."""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiolimiter import AsyncLimiter

from bot.clock import Clock
from bot.settings import Settings
from tests.fakediscord import FakeDiscord

T = TypeVar("T")
OUT = Path(__file__).resolve().parent / "out"


def out_dir() -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    return OUT


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now (for a child's HEALTH_PORT)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def healthy(process: asyncio.subprocess.Process, port: int, within: float = 60.0) -> None:
    """Until the bot child answers 200 on /healthz (RuntimeError if it exits first)."""
    async with asyncio.timeout(within), aiohttp.ClientSession() as session:
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"the bot exited with {process.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.05)


def bot_settings(
    fake: FakeDiscord, runcomfy_url: str, token: str, database: Path, guild_ids: Sequence[int], **overrides: Any
) -> Settings:
    """Settings of a bot run in the benchmark's own process: pointed at the fake Discord and the emulator, on
    the SQLite file `database`, the operator's caps off (benchmarks measure the bot), `overrides` on top."""
    values: dict[str, Any] = {
        "discord_token": fake.bot_token,
        "runcomfy_api_token": token,
        "runcomfy_base_url": runcomfy_url,
        "database_path": database,
        "discord_guild_ids": list(guild_ids),
        "discord_api_base_url": fake.rest_base,
        "discord_gateway_url": fake.gateway_url,
        "budget_images_per_day": 0,
        "budget_usd_per_day": 0,
        "budget_usd_per_month": 0,
    }
    return Settings(_env_file=None, **(values | overrides))  # _env_file: pydantic-settings' test override, no .env


def remove_database(path: Path) -> None:
    """Delete a SQLite file left by an earlier run, with its WAL and shared-memory files."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock moves only from timer to timer, `scale` times faster than real time.

    Every timer (asyncio sleeps, aiohttp timeouts, aiolimiter, the job scheduler)
    reads `loop.time()`, and the emulator's job timelines do too, so a job that
    takes 8 s of loop time takes 8 / scale real seconds. The clock moves only
    when the selector times out waiting for the next timer, and then lands on it
    exactly. Work (callbacks' CPU time) and local I/O (sockets on 127.0.0.1,
    aiosqlite's worker thread) take no loop time at all: the benchmark measures
    polling schedules, not how fast this machine is or how busy the run made it,
    and a strategy making 50,000 calls is not charged for its own load. The
    price: no network round trip is modelled (RunComfy's would add the same
    constant to every strategy).
    """

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self._now = 0.0
        selector: Any = self._selector  # type: ignore[attr-defined]  # BaseSelectorEventLoop's selector
        real_select = selector.select

        def select(timeout: float | None = None) -> Any:
            events = real_select(None if timeout is None else timeout / scale)
            if not events and timeout is not None:
                self._now += timeout  # nothing happened: the next timer is due (PEP 475 retries EINTR)
            return events

        selector.select = select

    def time(self) -> float:
        return self._now


def run_virtual(main: Callable[[], Coroutine[Any, Any, T]], scale: float) -> T:
    """Run the coroutine function `main` on a VirtualClockLoop."""
    with asyncio.Runner(loop_factory=lambda: VirtualClockLoop(scale)) as runner:
        return runner.run(main())


class LoopClock(Clock):
    """A job manager clock that agrees with the running loop's `time()` (virtual or not)."""

    def __init__(self, epoch: datetime | None = None) -> None:
        super().__init__()
        self._loop = asyncio.get_running_loop()
        self._start = epoch or datetime.now(UTC)
        self._zero = self._loop.time()

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self._loop.time() - self._zero)


def loop_clock(epoch: datetime | None = None) -> LoopClock:
    return LoopClock(epoch)


class CountingLimiter:
    """The client's shared limiter, recording when each request was let through (loop time)."""

    def __init__(self, rate: float, period: float = 1.0) -> None:
        self.rate = rate
        self.period = period
        self._limiter = AsyncLimiter(rate, period)
        self.stamps: list[float] = []

    async def acquire(self, amount: float = 1) -> None:
        await self._limiter.acquire(amount)
        self.stamps.append(asyncio.get_running_loop().time())

    def peak(self, window: float = 1.0) -> int:
        """Most requests let through in any `window` seconds."""
        best, start = 0, 0
        for end, stamp in enumerate(self.stamps):
            while stamp - self.stamps[start] >= window:
                start += 1
            best = max(best, end - start + 1)
        return best


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]; NaN for no values."""
    if not values:
        return math.nan
    data = sorted(values)
    pos = (len(data) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (pos - low)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (readable in a terminal too), numbers right-aligned."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max(len(h), *(len(row[i]) for row in cells)) if cells else len(h) for i, h in enumerate(headers)]
    numeric = [all(_is_number(row[i]) for row in rows) for i in range(len(headers))] if rows else []

    def line(values: Sequence[str]) -> str:
        padded = [
            v.rjust(w) if numeric and numeric[i] else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(("-" * (w + 1) + ":") if numeric and numeric[i] else "-" * (w + 2) for i, w in enumerate(widths))
        + "|"
    )
    return "\n".join([line(list(headers)), rule, *(line(row) for row in cells)])


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _cell(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)
