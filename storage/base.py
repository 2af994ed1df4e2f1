"""The `JobStore` protocol: what the job manager and the cogs need from a database.

SQLite (`storage.sqlite.SQLiteJobStore`) implements it for one process;
PostgreSQL (`storage.postgres.jobs.PostgresJobStore`) for several processes
sharing jobs, which it adds `JobLeases` for: each live job is held by one
process at a time, and a process that dies leaves its jobs to the others.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import Any, Protocol

from storage.job_inputs import JobInputs
from storage.models import GuildLoad, GuildSettings, Job, JobState, Lease, NewJob, Spend, Timing, Usage
from storage.polling_memory import PollingMemory


class JobNotFoundError(LookupError):
    """No job has that id."""


class GuildStore(Protocol):
    """Each server's `/imagine-admin` settings; read fresh on every command, so changes apply at once."""

    async def get(self, guild_id: int) -> GuildSettings:
        """The server's settings; the defaults for a server that never changed one."""
        ...

    async def update(self, guild_id: int, *, now: datetime, by: int | None = None, **fields: Any) -> GuildSettings:
        """Set scalar settings by `GuildSettings` field name (None restores the default)."""
        ...

    async def set_channel(self, guild_id: int, channel_id: int, *, allowed: bool, now: datetime) -> GuildSettings: ...

    async def clear_channels(self, guild_id: int) -> GuildSettings: ...

    async def set_term(self, guild_id: int, term: str, *, banned: bool, now: datetime) -> GuildSettings:
        """Ban a word or phrase (already normalised by the caller), or lift the ban."""
        ...

    async def clear_terms(self, guild_id: int) -> GuildSettings: ...


class JobLeases(Protocol):
    """Which process holds which live job, in a database several processes share.

    A live job is one not in a final state or still owing its member an image
    or a notice (`deliver_at` set). Its holder renews the lease while it runs;
    a job whose lease ran out (its process died) or was given up is an orphan,
    which any live process may claim. Claims are compare-and-set on the lease,
    so two processes never both win a job.
    """

    async def claim(self, job_ids: Collection[int], owner: str, *, until: datetime, now: datetime) -> list[Job]:
        """Take those of `job_ids` that are live and whose lease is free or ran out; the jobs as claimed."""
        ...

    async def adopt(self, previous: str, owner: str, *, until: datetime) -> list[Job]:
        """Take every live job `previous` holds (a process restarted in place of a dead one); the jobs taken."""
        ...

    async def renew(self, owner: str, *, until: datetime) -> int:
        """Extend every lease `owner` holds on a live job to `until`; how many."""
        ...

    async def release(self, owner: str, *, job_ids: Collection[int] | None = None) -> int:
        """Give up every lease `owner` holds (or those on `job_ids`), so others take the jobs at once; how many."""
        ...

    async def orphans(self, owner: str, *, now: datetime, limit: int) -> list[Job]:
        """Live Discord jobs (those with a channel) whose lease is free or ran out, not `owner`'s, oldest first."""
        ...

    async def next_expiry(self, owner: str) -> datetime | None:
        """When the next lease of another process runs out (a free one counts as already run out), or None."""
        ...

    async def publish(self, message: str) -> None:
        """Tell every process listening (`subscribe`) something, such as "a job of yours was cancelled"."""
        ...

    async def subscribe(self, listener: Callable[[str], None]) -> None:
        """Hear every `publish`ed message, this process's own included, until the store closes."""
        ...


class JobStore(Protocol):
    @property
    def guilds(self) -> GuildStore:
        """Per-server settings, kept in the same database as the jobs."""
        ...

    @property
    def polling(self) -> PollingMemory:
        """What the polling policy learned that no job row keeps (the queue's speed)."""
        ...

    @property
    def leases(self) -> JobLeases | None:
        """Leases on jobs when several processes share this database (PostgreSQL); None for one process (SQLite)."""
        ...

    def exclusive(self, key: int) -> AbstractAsyncContextManager[None]:
        """Held by one task at a time among every process using this database (a server's line, the budget)."""
        ...

    async def once(self, key: str, *, now: datetime, window: timedelta) -> bool:
        """True for the first call with `key` within `window` (whichever process makes it), False for the rest."""
        ...

    @property
    def inputs(self) -> JobInputs:
        """The images edit jobs start from (written by `create` with the job)."""
        ...

    async def create(
        self,
        new: NewJob,
        *,
        now: datetime,
        state: JobState = JobState.SUBMITTING,
        post_nonce: str | None = None,
        lease: Lease | None = None,
    ) -> Job:
        """Insert a job in state `submitting` (or `waiting`), held by `lease` when given; written before any
        request leaves the bot."""
        ...

    async def get(self, job_id: int) -> Job | None: ...

    async def transition(
        self,
        job_id: int,
        state: JobState,
        *,
        expect: JobState | Collection[JobState],
        now: datetime,
        owner: str | None = None,
        **fields: Any,
    ) -> Job | None:
        """Compare-and-set: move the job to `state` only if it is in an `expect`ed state (and, with `owner`, only
        while `owner` holds its lease); stamp that state's timestamp and `updated_at` and set `fields` in one
        write. The job as written, or None when it was not in an expected state, is held by another process, or
        does not exist: the loser of a race changes nothing.

        `fields` are Job attribute names (e.g. request_id, queue_position, error,
        result_url, deliver_at, delivery, cost_usd); origin fields may be given
        by their own names (message_id, interaction_token, ...).
        """
        ...

    async def update(
        self,
        job_id: int,
        *,
        now: datetime,
        expect: JobState | Collection[JobState] | None = None,
        owner: str | None = None,
        **fields: Any,
    ) -> Job | None:
        """Set `fields` without changing the state (only in the `expect`ed states, and only while `owner` holds
        the lease, when given); None when the job does not exist or the conditions did not hold."""
        ...

    async def give_input(self, job_id: int, image_id: int, *, now: datetime, owner: str | None = None) -> Job | None:
        """Name the stored input image of an edit written before its image was in (`Job.awaits_input`), while it
        waits (and `owner` holds it, when given); None when it no longer does. The one write of
        `input_image_id` after create: an edit's image cannot be promised within Discord's 3 seconds."""
        ...

    async def by_message_id(self, message_id: int) -> Job | None:
        """The job whose reply is that Discord message (for reactions on results)."""
        ...

    async def unfinished(self) -> Sequence[Job]:
        """Every job not in a final state, oldest first: what a restart resumes."""
        ...

    async def owing_delivery(self) -> Sequence[Job]:
        """Jobs whose image or end notice is still owed to their member (`deliver_at` set), soonest first."""
        ...

    async def channel_unfinished(self, channel_id: int) -> Sequence[Job]:
        """A channel's jobs not in a final state, oldest first."""
        ...

    async def recent_timings(self, model: str, *, limit: int = 50) -> Sequence[Timing]:
        """Queue and run durations of the newest finished jobs of `model` that reached `completed`."""
        ...

    async def guild_unfinished(self, guild_id: int) -> Sequence[Job]:
        """A server's jobs not in a final state, oldest first: its slots in use and its waiting line."""
        ...

    async def guild_load(self, guild_id: int, user_id: int) -> GuildLoad:
        """Counts of a server's unfinished jobs: the member's running and waiting, all running, all waiting."""
        ...

    async def billable_since(self, user_id: int, guild_id: int, since: datetime) -> Sequence[datetime]:
        """Creation times, oldest first, of a member's jobs in a server since `since` that may have been
        charged (not cancelled, not failed before RunComfy accepted them): what a daily quota counts."""
        ...

    async def results_for_user(self, user_id: int, guild_id: int, *, limit: int = 10) -> Sequence[Job]:
        """A member's delivered images in a server, newest first."""
        ...

    async def usage(self, guild_id: int, since: datetime, *, top: int = 5) -> Usage:
        """A server's images (jobs that reached `completed`) and spend since `since`: per day and top members."""
        ...

    async def prune(self, *, before: datetime) -> int:
        """Delete jobs in a final state that finished before `before`, keeping their usage in totals."""
        ...

    async def prune_inputs(self, *, before: datetime) -> int:
        """Delete input images created before `before` that no job names (a create that failed between writing
        its image and its job leaves one); how many went."""
        ...

    async def spend(self, *, day: datetime, month: datetime) -> tuple[Spend, Spend]:
        """The whole bot's spend since `day` and since `month` (UTC midnights), in one aggregate: every job that
        may be billed counts from the moment it is written."""
        ...

    async def count_unfinished_by_state(self) -> dict[JobState, int]:
        """Live jobs by state, read from an index of live jobs only (health and metrics ask often)."""
        ...

    async def close(self) -> None: ...
