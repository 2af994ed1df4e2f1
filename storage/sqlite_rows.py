"""A job as its SQLite row holds it, and back: SQLite has no datetime or boolean type of its own."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from storage.columns import BOOL_COLUMNS, COLUMNS, DATETIME_COLUMNS, job_from_values
from storage.models import FailureKind, Job
from storage.sqlite_common import from_text, to_text


def encode(column: str, value: Any) -> Any:
    """A job field as its SQLite column holds it: datetimes as UTC text, booleans as 0/1, enums as their value."""
    if value is None:
        return None
    if column in DATETIME_COLUMNS:
        if not isinstance(value, datetime):
            raise TypeError(f"{column} must be a datetime or None, got {type(value).__name__}")
        return to_text(value, column)
    if column in BOOL_COLUMNS:
        if not isinstance(value, bool):
            raise TypeError(f"{column} must be a bool, got {type(value).__name__}")
        return int(value)
    if column == "failure_kind":
        return FailureKind(value).value
    return value


def row_to_job(row: sqlite3.Row) -> Job:
    """The row with SQLite's text datetimes and 0/1 booleans turned back into Python's, as a `Job`."""
    values = {column: row[column] for column in COLUMNS}
    for column in DATETIME_COLUMNS:
        if values[column] is not None:
            values[column] = from_text(values[column])
    for column in BOOL_COLUMNS:
        values[column] = bool(values[column])
    return job_from_values(values)
