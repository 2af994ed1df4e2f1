"""What the SQLite stores share: datetimes as text, and "the file said no" as one exception.

Datetimes are stored as UTC ISO-8601 text with microseconds, so text order is
time order; naive datetimes are refused rather than guessed at.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path


class StoreUnavailableError(Exception):
    """The database cannot be used right now: read-only, locked, missing, full or damaged.

    Raised instead of the bare `sqlite3` error so callers can tell "the disk
    said no" (stop, tell the operator) from a bug in a query, and so a write
    that did not happen is never mistaken for one that did. The PostgreSQL
    store raises it too; its `path` is then the server's URL with any password
    replaced by `***`.
    """

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"job database {path} is unavailable: {reason}")
        self.path = path
        self.reason = reason


# Primary result codes (the low byte of the extended code) that describe the
# file or its environment rather than the SQL.
_UNAVAILABLE_CODES = frozenset(
    {
        sqlite3.SQLITE_PERM,
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_NOTADB,
    }
)


def to_text(value: datetime, name: str = "datetime") -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value!r}")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def from_text(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


@contextlib.contextmanager
def unavailable_on_error(path: Path) -> Iterator[None]:
    """Turn "the file cannot be used" errors into StoreUnavailableError; let SQL bugs through as they are."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        code = getattr(exc, "sqlite_errorcode", None)  # absent on errors raised by the sqlite3 module itself
        if code is not None and code & 0xFF in _UNAVAILABLE_CODES:
            raise StoreUnavailableError(path, f"{exc.sqlite_errorname}: {exc}") from exc
        raise
    except OSError as exc:
        raise StoreUnavailableError(path, str(exc)) from exc
