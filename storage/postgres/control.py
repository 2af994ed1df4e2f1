"""One connection of its own per process, for what a pooled connection cannot do: hold locks and listen.

Session advisory locks belong to the connection that took them, and LISTEN
hears only on the connection that asked; a pooled connection goes back to the
pool (and to other callers) after each statement. So each process keeps one
more connection, outside the pool:

* `exclusive(key)`: a lock every process on the database respects (a server's
  line, the operator's budget). Inside a process an asyncio lock per key comes
  first (advisory locks are re-entrant per session, so two tasks of one
  process would both "get" it); then `pg_try_advisory_lock` is asked, and
  asked again after a short sleep while another process holds it. Trying
  rather than waiting in `pg_advisory_lock` keeps the connection free for the
  other keys' requests and for notifications.
* `listen(channel, callback)`: LISTEN/NOTIFY, so a process hears at once that
  jobs were given up, or that a job it holds was cancelled elsewhere.

If the connection drops, the server releases its locks; the next use connects
again and listens again. A task holding a lock at that moment cannot undo what
it did under it, and its unlock finds nothing to release: that is logged as a
warning, and the cost is at most one admission checked against a stale count.
An unlock that fails is logged too, never raised over the work it guarded
(which is committed by then).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import asyncpg

from storage.postgres.connect import unavailable_on_error
from storage.sqlite_common import StoreUnavailableError

if TYPE_CHECKING:
    from storage.postgres.connect import Connection

log = logging.getLogger(__name__)

_FIRST_RETRY = 0.005  # seconds; doubled up to _LAST_RETRY while another process holds the key
_LAST_RETRY = 0.1


class Control:
    """The process's own connection to `url`, for advisory locks and notifications (see the module docstring)."""

    def __init__(self, url: str, connect: Callable[[], Any]) -> None:
        """`connect()` returns a new connection (asyncpg.connect with the pool's settings)."""
        self._url = url
        self._connect = connect
        self._conn: Connection | None = None
        self._use = asyncio.Lock()  # one statement at a time on the connection
        self._keys: dict[int, asyncio.Lock] = {}
        self._listeners: dict[str, list[Callable[[str], None]]] = {}
        self._listening: set[str] = set()  # the channels the current connection LISTENs on
        self._closed = False

    async def _connection(self) -> Connection:
        """The connection, connected again (and listening again) if it was lost; call under `_use`."""
        if self._closed:
            raise RuntimeError("the store is closed")
        if self._conn is None or self._conn.is_closed():
            if self._conn is not None:
                log.warning("the connection for locks and notifications to PostgreSQL was lost; connecting again")
            self._listening = set()
            with unavailable_on_error(self._url):
                self._conn = await self._connect()
        with unavailable_on_error(self._url):
            for channel in set(self._listeners) - self._listening:
                await self._conn.add_listener(channel, self._heard)
                self._listening.add(channel)
        return self._conn

    async def _run(self, sql: str, *args: Any) -> Any:
        async with self._use:
            conn = await self._connection()
            with unavailable_on_error(self._url):
                return await conn.fetchval(sql, *args)

    @contextlib.asynccontextmanager
    async def exclusive(self, key: int) -> AsyncIterator[None]:
        """Hold `key` against every task of every process on this database."""
        async with self._keys.setdefault(key, asyncio.Lock()):
            await self._lock(key)
            try:
                yield
            finally:
                await asyncio.shield(self._release(key))

    async def _lock(self, key: int) -> None:
        delay = _FIRST_RETRY
        while True:
            # Shielded: a caller cancelled while the answer is on its way must not leave the key held.
            attempt = asyncio.ensure_future(self._run("SELECT pg_try_advisory_lock($1)", key))
            try:
                taken = await asyncio.shield(attempt)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):  # the cancellation is what the caller must see
                    if await attempt:
                        await self._release(key)
                raise
            if taken:
                return
            await asyncio.sleep(delay * (1 + random.random()))  # noqa: S311 - jitter, not a secret
            delay = min(delay * 2, _LAST_RETRY)

    async def _release(self, key: int) -> None:
        try:
            held = await self._run("SELECT pg_advisory_unlock($1)", key)
        except StoreUnavailableError as error:
            log.warning("advisory lock %d not released (%s); the server frees it with the connection", key, error)
            return
        if not held:
            log.warning("advisory lock %d was no longer held (the connection to PostgreSQL was lost)", key)

    async def listen(self, channel: str, callback: Callable[[str], None]) -> None:
        """Call `callback(payload)` for every NOTIFY on `channel` from now on (from any process, this one too)."""
        self._listeners.setdefault(channel, []).append(callback)
        async with self._use:
            await self._connection()

    async def check(self) -> None:
        """Reconnect (and listen again) if the connection was lost: called regularly, so no notification is
        missed for longer than that."""
        async with self._use:
            await self._connection()

    def _heard(self, _conn: Connection, _pid: int, channel: str, payload: object) -> None:
        for callback in list(self._listeners.get(channel, ())):
            try:
                callback(str(payload))
            except Exception:
                log.exception("a listener on %s failed", channel)

    async def close(self) -> None:
        self._closed = True
        if self._conn is not None and not self._conn.is_closed():
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                await self._conn.close(timeout=5)
