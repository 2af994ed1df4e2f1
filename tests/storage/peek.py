"""What a test reads straight from the database, past the store's own API (which has no reason to offer it)."""

from __future__ import annotations

import contextlib
import sqlite3

from storage.open import AnyJobStore
from storage.sqlite import SQLiteJobStore


async def stored_images(store: AnyJobStore) -> int:
    """How many input images the database holds, whoever names them."""
    if isinstance(store, SQLiteJobStore):
        with contextlib.closing(sqlite3.connect(store.path)) as db:
            return int(db.execute("SELECT count(*) FROM input_images").fetchone()[0])
    return int(await store.pool.fetchval("SELECT count(*) FROM input_images"))
