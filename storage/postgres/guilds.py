"""`PostgresGuildStore`: each server's `/imagine-admin` settings, in the jobs' database.

Read on every command, so `get()` is one statement (the settings row and both
lists as arrays, through one round trip and one snapshot): a change an admin
makes in one process is in force for the next `/imagine` in every process,
with no cache to invalidate. Every write is one statement, then a fresh read.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from storage.columns import check_guild_settings
from storage.models import GUILD_SETTING_COLUMNS, GuildSettings
from storage.postgres.connect import aware, unavailable_on_error

if TYPE_CHECKING:
    from storage.base import GuildStore
    from storage.postgres.connect import Pool

# The server's row may not exist (defaults); the lists are ordered byte-wise, as SQLite orders them.
_GET_SQL = (
    f"SELECT {', '.join(f's.{name}' for name in GUILD_SETTING_COLUMNS)}, s.updated_at, s.updated_by,"  # noqa: S608
    " ARRAY(SELECT channel_id FROM guild_allowed_channels WHERE guild_id = $1 ORDER BY channel_id) AS channels,"
    ' ARRAY(SELECT term FROM guild_banned_terms WHERE guild_id = $1 ORDER BY term COLLATE "C") AS terms'
    " FROM (SELECT $1::bigint AS guild_id) AS g LEFT JOIN guild_settings AS s USING (guild_id)"
)
_ALLOW_SQL = (
    "INSERT INTO guild_allowed_channels (guild_id, channel_id, added_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
)
_DISALLOW_SQL = "DELETE FROM guild_allowed_channels WHERE guild_id = $1 AND channel_id = $2"
_BAN_SQL = "INSERT INTO guild_banned_terms (guild_id, term, added_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
_UNBAN_SQL = "DELETE FROM guild_banned_terms WHERE guild_id = $1 AND term = $2"


class PostgresGuildStore:
    """Per-server settings over the job store's pool (`PostgresJobStore.guilds`)."""

    def __init__(self, pool: Pool, url: str) -> None:
        self._pool = pool
        self._url = url  # for scrubbing driver errors; never logged

    async def _execute(self, sql: str, *args: Any) -> None:
        with unavailable_on_error(self._url):
            await self._pool.execute(sql, *args)

    async def get(self, guild_id: int) -> GuildSettings:
        """The server's settings; the defaults for a server that never changed one."""
        with unavailable_on_error(self._url):
            row = await self._pool.fetchrow(_GET_SQL, guild_id)
        if row is None:
            raise RuntimeError("a one-row SELECT returned no row")
        values: dict[str, Any] = {
            "allowed_channels": frozenset(row["channels"]),
            "banned_terms": tuple(row["terms"]),
        }
        if row["updated_at"] is not None:  # NOT NULL in the table: None means the server has no row
            values.update({name: row[name] for name in GUILD_SETTING_COLUMNS if row[name] is not None})
            values["updated_at"] = row["updated_at"]
            values["updated_by"] = row["updated_by"]
        return GuildSettings(guild_id=guild_id, **values)

    async def update(self, guild_id: int, *, now: datetime, by: int | None = None, **fields: Any) -> GuildSettings:
        """Set scalar settings (None restores a default); one upsert."""
        checked = check_guild_settings(fields)
        if checked:
            names = list(checked)
            placeholders = ", ".join(f"${index}" for index in range(4, len(names) + 4))
            updates = ", ".join(f"{name} = EXCLUDED.{name}" for name in names)
            sql = (
                f"INSERT INTO guild_settings (guild_id, updated_at, updated_by, {', '.join(names)})"  # noqa: S608
                f" VALUES ($1, $2, $3, {placeholders})"
                f" ON CONFLICT (guild_id) DO UPDATE SET {updates},"
                " updated_at = EXCLUDED.updated_at, updated_by = EXCLUDED.updated_by"
            )
            await self._execute(sql, guild_id, aware(now, "now"), by, *checked.values())
        return await self.get(guild_id)

    async def set_channel(self, guild_id: int, channel_id: int, *, allowed: bool, now: datetime) -> GuildSettings:
        """Add a channel to the allowed list, or take it off."""
        if allowed:
            await self._execute(_ALLOW_SQL, guild_id, channel_id, aware(now, "now"))
        else:
            await self._execute(_DISALLOW_SQL, guild_id, channel_id)
        return await self.get(guild_id)

    async def clear_channels(self, guild_id: int) -> GuildSettings:
        """No allowed list any more: every channel."""
        await self._execute("DELETE FROM guild_allowed_channels WHERE guild_id = $1", guild_id)
        return await self.get(guild_id)

    async def set_term(self, guild_id: int, term: str, *, banned: bool, now: datetime) -> GuildSettings:
        """Ban a (normalised) word or phrase, or lift the ban."""
        if not term:
            raise ValueError("a banned term cannot be empty")
        if banned:
            await self._execute(_BAN_SQL, guild_id, term, aware(now, "now"))
        else:
            await self._execute(_UNBAN_SQL, guild_id, term)
        return await self.get(guild_id)

    async def clear_terms(self, guild_id: int) -> GuildSettings:
        await self._execute("DELETE FROM guild_banned_terms WHERE guild_id = $1", guild_id)
        return await self.get(guild_id)


if TYPE_CHECKING:

    def _implements_protocol(store: PostgresGuildStore) -> GuildStore:
        return store  # mypy fails here if PostgresGuildStore drifts from the GuildStore protocol
