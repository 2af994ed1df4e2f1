"""A database the bot cannot write (read-only, or locked by another writer): the member is told, nothing starts."""

from __future__ import annotations

import sqlite3

import pytest

from storage.sqlite import SQLiteJobStore
from tests.e2e.hostile.support import Case, Play, World, ephemeral_answer

NOT_STARTED = "nothing was started"


async def database_read_only(w: World) -> None:
    # Root ignores file modes; query_only makes SQLite refuse writes the way a read-only file does (SQLITE_READONLY).
    store = w.bot.store
    assert isinstance(store, SQLiteJobStore)  # these bots keep their jobs in a SQLite file
    await store._db.execute("PRAGMA query_only = ON")
    try:
        await ephemeral_answer(await w.alice.run_command("imagine", w.general, prompt="a locked-out fox"), NOT_STARTED)
    finally:
        await store._db.execute("PRAGMA query_only = OFF")


async def database_locked(w: World) -> None:
    holder = sqlite3.connect(w.settings.database_path, isolation_level=None, timeout=0.1)
    holder.execute("BEGIN IMMEDIATE")  # another writer (an operator's sqlite3 shell, say) holds the write lock
    try:
        interaction = await w.alice.run_command("imagine", w.general, prompt="a patient fox")
        await ephemeral_answer(interaction, NOT_STARTED)
        assert not interaction.failed, "the member must get an answer, not 'the application did not respond'"
    finally:
        holder.execute("ROLLBACK")
        holder.close()


CASES: dict[str, Case] = {
    "database read-only": Case(database_read_only),
    "database locked": Case(database_locked),
}


@pytest.mark.parametrize("name", list(CASES))
async def test_an_unwritable_database_gets_its_answer_and_changes_nothing_else(play: Play, name: str) -> None:
    await play(CASES[name])
