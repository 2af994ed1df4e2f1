"""Faults a real database can show, made on purpose: the store under test keeps its own connection."""

from __future__ import annotations

import contextlib
import sqlite3

from storage.open import AnyJobStore
from storage.sqlite import SQLiteJobStore

REFUSED = "no room for the image"


async def refuse_input_images(store: AnyJobStore) -> None:
    """From now on the database refuses to keep an edit's input image (as a full disk, a dropped connection or
    an image too big would) while every other write still works: what a job's create must survive."""
    if isinstance(store, SQLiteJobStore):
        with contextlib.closing(sqlite3.connect(store.path, isolation_level=None)) as db:
            db.execute(
                f"CREATE TRIGGER refuse_inputs BEFORE INSERT ON input_images"
                f" BEGIN SELECT RAISE(ABORT, '{REFUSED}'); END"
            )
        return
    await store.pool.execute(
        "CREATE FUNCTION refuse_inputs() RETURNS trigger LANGUAGE plpgsql"
        f" AS $$ BEGIN RAISE EXCEPTION '{REFUSED}'; END $$;"
        " CREATE TRIGGER refuse_inputs BEFORE INSERT ON input_images FOR EACH ROW EXECUTE FUNCTION refuse_inputs()"
    )
