"""Running an unmodified discord.py client against the fake: two URL settings, nothing else patched."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TypeVar

import discord
import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route

from .fake import FakeDiscord

ClientT = TypeVar("ClientT", bound=discord.Client)


@contextlib.contextmanager
def pointed_at(fake: FakeDiscord) -> Iterator[None]:
    """Point discord.py's REST base (also used by webhook/interaction routes) and gateway at the fake."""
    old_base, old_gateway = Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    Route.BASE = fake.rest_base
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    try:
        yield
    finally:
        Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = old_base, old_gateway


async def _until_ready(bot: discord.Client, task: asyncio.Task[None], deadline: float) -> None:
    loop = asyncio.get_running_loop()
    while not bot.is_ready():
        if task.done():
            task.result()  # re-raise the startup crash (LoginFailure, PrivilegedIntentsRequired, ...)
            raise RuntimeError("bot.start() returned before the bot became ready")
        if loop.time() > deadline:
            raise TimeoutError("bot not ready in time")
        await asyncio.sleep(0.01)


async def _stopped(task: asyncio.Task[None]) -> BaseException | None:
    """Wait for `bot.start()` to return after `close()`; its exception, if it crashed."""
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout=5.0)
    except TimeoutError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return TimeoutError("bot.start() did not return within 5 s of close()")
    except asyncio.CancelledError:
        if not task.cancelled():
            raise
    except Exception as exc:
        return exc
    return None


@contextlib.asynccontextmanager
async def run_bot(
    fake: FakeDiscord, bot: ClientT, *, ready_timeout: float = 10.0, token: str | None = None
) -> AsyncIterator[ClientT]:
    """Start `bot` against `fake`, wait until it is ready, close it cleanly on exit.

    A crash of `bot.start()` during startup or during the test is raised here.
    Readiness waits `guild_ready_timeout` (discord.py default 2 s) after the last
    GUILD_CREATE; test bots pass `guild_ready_timeout=0.05` to their constructor.
    """
    with pointed_at(fake):
        task = asyncio.create_task(bot.start(token or fake.bot_token), name="bot.start")
        try:
            await _until_ready(bot, task, asyncio.get_running_loop().time() + ready_timeout)
            yield bot
        finally:
            await bot.close()
            crash = await _stopped(task)
        if crash is not None:
            raise crash


@contextlib.asynccontextmanager
async def run_bots(
    fake: FakeDiscord, bots: Sequence[ClientT], *, ready_timeout: float = 10.0
) -> AsyncIterator[list[ClientT]]:
    """Start several clients against one fake, as several processes of one bot run; all ready before the block.

    Give each its own shards, e.g. `AutoShardedClient(shard_count=2, shard_ids=[i])`, or the bot's
    `build_bot` with SHARD_COUNT/SHARD_IDS: the fake routes every event to the shard Discord would.
    They start one after another and close in reverse order; a crash of any is raised.
    """
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(run_bot(fake, bot, ready_timeout=ready_timeout)) for bot in bots]
