"""Stopping on SIGTERM (Docker, systemd) or SIGINT (Ctrl-C) without losing or doubling a job.

The order, and why:

1. Stop taking new work: commands (and, where the cog asks, buttons) get one
   ephemeral sentence instead of "This interaction failed"; 🔄 reactions are
   not dispatched.
2. Let handlers already running finish (a `/imagine` between its database
   write and its submit must not be cut in half), for a few seconds at most.
3. Close: the job manager stops polling and lets in-flight steps write their
   state; then cogs, the gateway, the health endpoint, the database (aiosqlite
   runs queued statements before it closes) and the HTTP session.

Whatever is still pending is in the database and resumes on the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from typing import Any

import discord

log = logging.getLogger(__name__)

RESTARTING = "I'm restarting right now, so I can't take that. Please try again in a minute."

# discord.py names the tasks that run interaction handlers and event listeners; draining these
# is how step 2 knows what is in flight. An unknown name only means that task is not waited for.
HANDLER_TASK_PREFIXES = (
    "CommandTree-invoker",
    "discord-ui-dynamic-item-",
    "discord-ui-view-dispatch-",
    "discord-ui-modal-dispatch-",
    "discord.py: on_raw_reaction_add",
)
# Events not dispatched at all once stopping: each would start a new job.
REFUSED_EVENTS = frozenset({"raw_reaction_add"})
DRAIN_SECONDS = 5.0
# Past SHUTDOWN_TIMEOUT_SECONDS plus this, the process exits anyway (status 1): a stop must never hang.
WATCHDOG_GRACE = 1.5


async def refuse_while_stopping(interaction: discord.Interaction[Any]) -> bool:
    """True, after telling the member (ephemerally) to try again in a minute, when the bot is shutting down.

    For `interaction_check`s: `return not await refuse_while_stopping(interaction)`.
    """
    if not getattr(interaction.client, "stopping", False):
        return False
    with contextlib.suppress(discord.HTTPException):
        if not interaction.response.is_done():
            await interaction.response.send_message(RESTARTING, ephemeral=True)
    return True


def handler_tasks() -> list[asyncio.Task[Any]]:
    """Interaction handlers and reaction listeners running right now (the caller's own task excluded)."""
    current = asyncio.current_task()
    return [
        task
        for task in asyncio.all_tasks()
        if task is not current and not task.done() and task.get_name().startswith(HANDLER_TASK_PREFIXES)
    ]


async def drain_handlers(timeout: float) -> int:  # noqa: ASYNC109 - a budget shared with the steps after it
    """Wait up to `timeout` for running handlers; returns how many were still running at the end."""
    tasks = handler_tasks()
    if not tasks or timeout <= 0:
        return len(tasks)
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    return len(pending)


def install_signal_handlers(loop: asyncio.AbstractEventLoop, on_signal: Callable[[str], None]) -> list[signal.Signals]:
    """Route SIGTERM and SIGINT to `on_signal(name)`; returns the signals installed (none on Windows)."""
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, on_signal, sig.name)
        except (NotImplementedError, RuntimeError):  # Windows, or not the main thread
            continue
        installed.append(sig)
    return installed


def force_exit(after: float) -> None:
    """The watchdog: the graceful stop overran its budget, so leave now, as a crash would (the store is the truth)."""
    log.error("shutdown not finished after %.1f s: exiting now; unfinished jobs resume on the next start", after)
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    os._exit(1)
