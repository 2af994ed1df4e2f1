"""What every backend's SQL knows about the tables, derived from the dataclasses in `storage.models`.

The jobs table names its columns after `Job`'s and `JobOrigin`'s fields, so the
column lists, which of them hold datetimes or booleans, and which a caller may
set are computed here from the dataclasses rather than typed out per backend:
a field added to `Job` (plus a migration per backend) reaches every store's
INSERT, UPDATE and SELECT at once. Column names only ever come from here, never
from callers, which is what makes building SQL text from them safe.

Both backends use it: the SQLite store (`storage/sqlite.py`, `guilds.py`,
`retention.py`) and the PostgreSQL one. Only turning values into what each
driver stores (SQLite's text datetimes and 0/1 booleans) stays with each.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from datetime import timedelta
from typing import Any, Protocol

from storage.models import (
    ACTIVE_STATES,
    FINAL_STATES,
    GUILD_SETTING_COLUMNS,
    FailureKind,
    GuildSettings,
    Job,
    JobOrigin,
    JobState,
    NewJob,
    StoredInput,
)

ORIGIN_COLUMNS = tuple(field.name for field in dataclasses.fields(JobOrigin))
JOB_COLUMNS = tuple(field.name for field in dataclasses.fields(Job) if field.name != "origin")
COLUMNS = JOB_COLUMNS + ORIGIN_COLUMNS
SELECT_LIST = ", ".join(COLUMNS)
DATETIME_COLUMNS = frozenset(
    field.name for field in dataclasses.fields(Job) + dataclasses.fields(JobOrigin) if "datetime" in str(field.type)
)
BOOL_COLUMNS = frozenset(
    field.name for field in dataclasses.fields(Job) + dataclasses.fields(JobOrigin) if str(field.type) == "bool"
)
# What a job is (its inputs, identity and lineage) never changes after create();
# state and updated_at change only through transition() and every write.
FIXED_COLUMNS = frozenset(
    {"id", "state", "created_at", "updated_at", "model", "prompt", "aspect_ratio", "seed", "exempt", "post_nonce"}
    | {"count", "input_url", "input_expires_at", "input_image_id"}
)

SETTABLE_COLUMNS = frozenset(COLUMNS) - FIXED_COLUMNS - {"parent_id"}
CREATE_STATES = frozenset({JobState.SUBMITTING, JobState.WAITING})

# Sorted, so the text is the same as the partial indexes' WHERE in the migrations.
FINAL_LIST = ", ".join(f"'{state.value}'" for state in sorted(FINAL_STATES, key=lambda s: s.value))
ACTIVE_LIST = ", ".join(f"'{state.value}'" for state in sorted(ACTIVE_STATES))
UNFINISHED_WHERE = f"state NOT IN ({FINAL_LIST})"
# Jobs a process must hold a lease on: not finished, or still owing their member an image or a notice.
LIVE_WHERE = f"({UNFINISHED_WHERE} OR deliver_at IS NOT NULL)"

# `once()` keys (a reroll's "already started") are kept this long, whatever their window, then cleared.
ONCE_KEPT = timedelta(days=1)


def check_once_window(window: timedelta) -> None:
    """A `once()` window must be positive and shorter than keys are kept, or a key could be cleared too soon."""
    if not timedelta(0) < window <= ONCE_KEPT:
        raise ValueError(f"a once() window must be within (0, {ONCE_KEPT}], got {window}")


# Joined to `jobs`, one row per image a job asked for (count is 1 to 10): quotas count images, not jobs.
PER_IMAGE = (
    "JOIN (SELECT 1 AS n"
    + "".join(f" UNION ALL SELECT {n}" for n in range(2, 11))
    + ") AS image ON image.n <= jobs.count"
)


def new_job_values(new: NewJob) -> dict[str, Any]:
    """The columns of a new job beyond its prompt, ratio, seed and origin: images asked for, the cost estimate
    (written with the job, so the budget counts it at its own model's price), an edit's input URL and the stored
    image it shares (a member's new image is named once read: `give_input`)."""
    return {
        "count": new.count,
        "cost_usd": new.cost_usd,
        "cost_estimated": new.cost_usd is not None,
        "input_url": new.input_url,
        "input_expires_at": new.input_expires_at,
        "input_image_id": new.input.image_id if isinstance(new.input, StoredInput) else None,
    }


def check_fields(fields: Mapping[str, Any]) -> None:
    """Refuse names that are not settable job columns before any SQL is built from them."""
    unknown = sorted(set(fields) - SETTABLE_COLUMNS)
    if unknown:
        raise TypeError(
            f"cannot set job field(s) {', '.join(unknown)}; settable: {', '.join(sorted(SETTABLE_COLUMNS))}"
        )


def expected_states(expect: JobState | Collection[JobState]) -> list[str]:
    """The values of the states a compare-and-set write accepts; naming none is a bug, not "never"."""
    states = [expect] if isinstance(expect, JobState) else list(expect)
    if not states:
        raise ValueError("expect names no state")
    return [JobState(state).value for state in states]


class Row(Protocol):
    """A result row read by column name: asyncpg's Record, sqlite3.Row, a dict."""

    def __getitem__(self, key: str, /) -> Any: ...


def job_from_values(values: Row) -> Job:
    """Build a `Job` from one row whose values are already Python types (datetimes, bools)."""
    fields = {column: values[column] for column in COLUMNS}
    origin = JobOrigin(**{column: fields.pop(column) for column in ORIGIN_COLUMNS})
    fields["state"] = JobState(fields["state"])
    if fields["failure_kind"] is not None:
        fields["failure_kind"] = FailureKind(fields["failure_kind"])
    return Job(origin=origin, **fields)


# The settings' kinds, read off GuildSettings' annotations, so a new setting is checked the day it is added.
_SETTING_TYPES = {field.name: str(field.type) for field in dataclasses.fields(GuildSettings)}
BOOL_SETTINGS = frozenset(name for name in GUILD_SETTING_COLUMNS if _SETTING_TYPES[name] == "bool")
_INT_SETTINGS = frozenset(name for name in GUILD_SETTING_COLUMNS if _SETTING_TYPES[name] == "int")


def check_guild_settings(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The settings as given, once known names and sane values are confirmed (the names become SQL).

    None is allowed for every setting: it restores the default.
    """
    checked: dict[str, Any] = {}
    for name, value in fields.items():
        if name not in GUILD_SETTING_COLUMNS:
            raise TypeError(f"unknown guild setting {name!r}; known: {', '.join(GUILD_SETTING_COLUMNS)}")
        if value is None:
            pass
        elif name in BOOL_SETTINGS:
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
        elif name in _INT_SETTINGS:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
        elif not isinstance(value, str):
            raise TypeError(f"{name} must be a str, got {type(value).__name__}")
        checked[name] = value
    return checked
