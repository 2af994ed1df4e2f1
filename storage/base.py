"""The `JobStore` protocol: what the job manager and the cogs need from a database.

SQLite (`storage.sqlite.SQLiteJobStore`) implements it for one process; a
PostgreSQL store can implement the same methods for several processes sharing
jobs through the lease columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from storage.models import Job, JobState, NewJob, Timing


class JobNotFoundError(LookupError):
    """No job has that id."""


class JobStore(Protocol):
    async def create(self, new: NewJob, *, now: datetime) -> Job:
        """Insert a job in state `submitting`; written before any request leaves the bot."""
        ...

    async def get(self, job_id: int) -> Job | None: ...

    async def transition(self, job_id: int, state: JobState, *, now: datetime, **fields: Any) -> Job:
        """Move a job to `state`, stamp that state's timestamp and `updated_at`, and set `fields` in one write.

        `fields` are Job attribute names (e.g. request_id, queue_position, error,
        result_url, next_poll_at, delivery, cost_usd); origin fields may be given
        by their own names (message_id, interaction_token, ...).
        Raises JobNotFoundError for an unknown id.
        """
        ...

    async def update(self, job_id: int, *, now: datetime, **fields: Any) -> Job:
        """Set `fields` without changing the state (queue position, next poll time, poll count, cost)."""
        ...

    async def by_message_id(self, message_id: int) -> Job | None:
        """The job whose reply is that Discord message (for reactions on results)."""
        ...

    async def unfinished(self) -> Sequence[Job]:
        """Every job not in a final state, oldest first: what a restart resumes."""
        ...

    async def recent_timings(self, model: str, *, limit: int = 50) -> Sequence[Timing]:
        """Queue and run durations of the newest finished jobs of `model` that reached `completed`."""
        ...

    async def close(self) -> None: ...
