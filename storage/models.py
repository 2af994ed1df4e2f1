"""The job row as plain data: what every other part of the bot reads and writes.

Kept free of SQL and of RunComfy or Discord types, so a PostgreSQL store can
return the same objects later.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class JobState(StrEnum):
    """A job's lifecycle; the values are what the database stores.

    `completed` means the image URL is known; `delivered` means the image
    reached its destination (a Discord message, a file on disk).
    """

    WAITING = "waiting"  # accepted, waiting in the bot for one of its server's slots; nothing sent upstream
    SUBMITTING = "submitting"
    IN_QUEUE = "in_queue"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES

    @property
    def is_upstream_pending(self) -> bool:
        """Still waiting on RunComfy (the scheduler polls these)."""
        return self in (JobState.IN_QUEUE, JobState.IN_PROGRESS)


FINAL_STATES = frozenset({JobState.DELIVERED, JobState.FAILED, JobState.CANCELLED})
# Jobs holding one of their server's slots: sent, or about to be, and not finished.
ACTIVE_STATES = frozenset({JobState.SUBMITTING, JobState.IN_QUEUE, JobState.IN_PROGRESS, JobState.COMPLETED})

# The one column per state that records when the job entered it.
STATE_TIMESTAMP = {
    JobState.WAITING: "created_at",
    JobState.SUBMITTING: "created_at",
    JobState.IN_QUEUE: "queued_at",
    JobState.IN_PROGRESS: "started_at",
    JobState.COMPLETED: "completed_at",
    JobState.DELIVERED: "finished_at",
    JobState.FAILED: "finished_at",
    JobState.CANCELLED: "finished_at",
}


@dataclass(frozen=True, slots=True)
class JobOrigin:
    """Who started a job and where its answer goes; all optional (the CLI has none of it).

    The interaction token is a secret: it is excluded from repr and never logged.
    """

    guild_id: int | None = None
    channel_id: int | None = None
    user_id: int | None = None
    message_id: int | None = None
    application_id: int | None = None
    interaction_token: str | None = dataclasses.field(default=None, repr=False)
    token_expires_at: datetime | None = None
    filesize_limit: int | None = None


@dataclass(frozen=True, slots=True)
class NewJob:
    """What is known before anything is sent to RunComfy."""

    model: str
    prompt: str
    aspect_ratio: str
    seed: int
    origin: JobOrigin = JobOrigin()
    parent_id: int | None = None


@dataclass(frozen=True, slots=True)
class Job:
    """One row of the jobs table. Timestamps are timezone-aware UTC."""

    id: int
    model: str
    prompt: str
    aspect_ratio: str
    seed: int
    state: JobState
    origin: JobOrigin
    created_at: datetime
    updated_at: datetime
    request_id: str | None = None
    parent_id: int | None = None
    queue_position: int | None = None
    queued_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    finished_at: datetime | None = None
    next_poll_at: datetime | None = None
    poll_count: int = 0
    result_url: str | None = None
    error: str | None = None
    cost_usd: float | None = None
    cost_estimated: bool = False
    delivery: str | None = None
    lease_owner: str | None = None
    lease_until: datetime | None = None
    deleted_at: datetime | None = None  # when the result message was deleted from Discord on request


@dataclass(frozen=True, slots=True)
class Timing:
    """How long a finished job waited and ran: what the scheduler learns from."""

    queue_seconds: float
    run_seconds: float


@dataclass(frozen=True, slots=True)
class GuildSettings:
    """One server's choices, as `/imagine-admin` sets them; a server that set nothing gets these defaults.

    `default_aspect_ratio` None means the model's own default. Empty
    `allowed_channels` means every channel.
    """

    guild_id: int
    allowed_channels: frozenset[int] = frozenset()
    default_aspect_ratio: str | None = None
    member_concurrent: int = 2
    member_daily: int = 25
    guild_concurrent: int = 10
    admins_bypass: bool = True
    banned_terms: tuple[str, ...] = ()
    reaction_reroll: bool = True
    show_cost: bool = False
    updated_at: datetime | None = None
    updated_by: int | None = None


# The scalar settings a server can change, by column name (lists have their own tables).
GUILD_SETTING_COLUMNS = (
    "default_aspect_ratio",
    "member_concurrent",
    "member_daily",
    "guild_concurrent",
    "admins_bypass",
    "reaction_reroll",
    "show_cost",
)


@dataclass(frozen=True, slots=True)
class GuildLoad:
    """How busy a server is: what admission decides on, counted by the database, not by loading rows."""

    mine: int  # the asking member's unfinished jobs there
    active: int  # jobs holding a slot (submitting to completed)
    waiting: int  # jobs in the server's line


@dataclass(frozen=True, slots=True)
class UsageDay:
    """Images made on one UTC day and what they cost; `estimated` of them carry an estimated cost,
    `unpriced` have no cost at all."""

    day: str  # YYYY-MM-DD
    images: int
    cost_usd: float
    estimated: int
    unpriced: int


@dataclass(frozen=True, slots=True)
class MemberUsage:
    user_id: int
    images: int
    cost_usd: float
    estimated: int
    unpriced: int


@dataclass(frozen=True, slots=True)
class Usage:
    """A server's images and spend since some moment: per day, oldest first, and its top members."""

    days: tuple[UsageDay, ...]
    members: tuple[MemberUsage, ...]

    @property
    def images(self) -> int:
        return sum(day.images for day in self.days)

    @property
    def cost_usd(self) -> float:
        return sum(day.cost_usd for day in self.days)

    @property
    def estimated(self) -> int:
        return sum(day.estimated for day in self.days)

    @property
    def unpriced(self) -> int:
        return sum(day.unpriced for day in self.days)
