"""`SQLiteGuildStore`: each server's `/imagine-admin` settings, next to its jobs in the same file.

Read on every command (three indexed lookups), so a change an admin makes is
in force for the very next `/imagine`, with no cache to invalidate and no
restart. Every write is one statement, committed when the method returns.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosqlite

from storage.columns import BOOL_SETTINGS, check_guild_settings
from storage.models import GUILD_SETTING_COLUMNS, GuildSettings
from storage.sqlite_common import from_text, to_text, unavailable_on_error

if TYPE_CHECKING:
    from storage.base import GuildStore


def _encode(fields: dict[str, Any]) -> dict[str, Any]:
    """The settings as SQLite stores them (booleans as 0/1), once storage/columns.py has checked names and values
    (the names become SQL)."""
    return {
        name: int(value) if isinstance(value, bool) else value for name, value in check_guild_settings(fields).items()
    }


class SQLiteGuildStore:
    """Per-server settings over the job store's connection (`SQLiteJobStore.guilds`)."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path

    async def get(self, guild_id: int) -> GuildSettings:
        """The server's settings; the defaults for a server that never changed one."""
        with unavailable_on_error(self.path):
            rows = list(await self._db.execute_fetchall("SELECT * FROM guild_settings WHERE guild_id = ?", (guild_id,)))
            channels = await self._db.execute_fetchall(
                "SELECT channel_id FROM guild_allowed_channels WHERE guild_id = ? ORDER BY channel_id", (guild_id,)
            )
            terms = await self._db.execute_fetchall(
                "SELECT term FROM guild_banned_terms WHERE guild_id = ? ORDER BY term", (guild_id,)
            )
        values: dict[str, Any] = {
            "allowed_channels": frozenset(int(row[0]) for row in channels),
            "banned_terms": tuple(str(row[0]) for row in terms),
        }
        if rows:
            row: sqlite3.Row = rows[0]
            for name in GUILD_SETTING_COLUMNS:
                value = row[name]
                if value is not None:
                    values[name] = bool(value) if name in BOOL_SETTINGS else value
            values["updated_at"] = from_text(row["updated_at"])
            values["updated_by"] = row["updated_by"]
        return GuildSettings(guild_id=guild_id, **values)

    async def update(self, guild_id: int, *, now: datetime, by: int | None = None, **fields: Any) -> GuildSettings:
        """Set scalar settings (None restores a default); one upsert."""
        encoded = _encode(fields)
        if encoded:
            names = ", ".join(encoded)
            placeholders = ", ".join(f":{name}" for name in encoded)
            updates = ", ".join(f"{name} = excluded.{name}" for name in encoded)
            sql = (
                f"INSERT INTO guild_settings (guild_id, {names}, updated_at, updated_by)"  # noqa: S608 - checked names
                f" VALUES (:guild_id, {placeholders}, :now, :by)"
                f" ON CONFLICT (guild_id) DO UPDATE SET {updates},"
                " updated_at = excluded.updated_at, updated_by = excluded.updated_by"
            )
            params = {"guild_id": guild_id, "now": to_text(now, "now"), "by": by, **encoded}
            with unavailable_on_error(self.path):
                await self._db.execute(sql, params)
        return await self.get(guild_id)

    async def set_channel(self, guild_id: int, channel_id: int, *, allowed: bool, now: datetime) -> GuildSettings:
        """Add a channel to the allowed list, or take it off."""
        if allowed:
            sql = "INSERT OR IGNORE INTO guild_allowed_channels (guild_id, channel_id, added_at) VALUES (?, ?, ?)"
            params: tuple[Any, ...] = (guild_id, channel_id, to_text(now, "now"))
        else:
            sql = "DELETE FROM guild_allowed_channels WHERE guild_id = ? AND channel_id = ?"
            params = (guild_id, channel_id)
        with unavailable_on_error(self.path):
            await self._db.execute(sql, params)
        return await self.get(guild_id)

    async def clear_channels(self, guild_id: int) -> GuildSettings:
        """No allowed list any more: every channel."""
        with unavailable_on_error(self.path):
            await self._db.execute("DELETE FROM guild_allowed_channels WHERE guild_id = ?", (guild_id,))
        return await self.get(guild_id)

    async def set_term(self, guild_id: int, term: str, *, banned: bool, now: datetime) -> GuildSettings:
        """Ban a (normalised) word or phrase, or lift the ban."""
        if not term:
            raise ValueError("a banned term cannot be empty")
        if banned:
            sql = "INSERT OR IGNORE INTO guild_banned_terms (guild_id, term, added_at) VALUES (?, ?, ?)"
            params: tuple[Any, ...] = (guild_id, term, to_text(now, "now"))
        else:
            sql = "DELETE FROM guild_banned_terms WHERE guild_id = ? AND term = ?"
            params = (guild_id, term)
        with unavailable_on_error(self.path):
            await self._db.execute(sql, params)
        return await self.get(guild_id)

    async def clear_terms(self, guild_id: int) -> GuildSettings:
        with unavailable_on_error(self.path):
            await self._db.execute("DELETE FROM guild_banned_terms WHERE guild_id = ?", (guild_id,))
        return await self.get(guild_id)


if TYPE_CHECKING:

    def _implements_protocol(store: SQLiteGuildStore) -> GuildStore:
        return store  # mypy fails here if SQLiteGuildStore drifts from the GuildStore protocol
