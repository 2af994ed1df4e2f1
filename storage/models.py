"""The job row as plain data: what every other part of the bot reads and writes.

Kept free of SQL and of RunComfy or Discord types, so a PostgreSQL store can
return the same objects later.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class JobState(StrEnum):
    """A job's lifecycle; the values are what the database stores.

    ```
    waiting ─► submitting ─► in_queue ─► in_progress ─► completed ─► delivering ─► delivered
       │            │            │            │              │              └─► undeliverable
       └────────────┴────────────┴────────────┴──────────────┴─► failed | cancelled
    ```

    `completed` means RunComfy made the image (its URL is known, it is paid
    for); `delivering` means the bot is trying to put it where it belongs and
    keeps trying, across restarts, until `delivered` or, when the destination
    is gone or the retry window closed, `undeliverable`. A failed or cancelled
    job still owes its member a notice: `deliver_at` stays set until Discord
    confirmed it (see `Job.notice_pending`).
    """

    WAITING = "waiting"  # accepted, waiting in the bot's line of its server; nothing sent upstream
    SUBMITTING = "submitting"
    IN_QUEUE = "in_queue"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    UNDELIVERABLE = "undeliverable"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES

    @property
    def is_upstream_pending(self) -> bool:
        """Still waiting on RunComfy (the poller looks at these)."""
        return self in UPSTREAM_STATES

    @property
    def holds_slot(self) -> bool:
        """Counts against its server's and its member's jobs at once: sent, or about to be, not finished."""
        return self in ACTIVE_STATES


FINAL_STATES = frozenset({JobState.DELIVERED, JobState.UNDELIVERABLE, JobState.FAILED, JobState.CANCELLED})
UPSTREAM_STATES = frozenset({JobState.IN_QUEUE, JobState.IN_PROGRESS})
# Jobs holding one of their server's slots. A finished image being delivered no longer does: delivery costs
# RunComfy nothing, and a Discord outage must not stop the server's line.
ACTIVE_STATES = frozenset({JobState.SUBMITTING, JobState.IN_QUEUE, JobState.IN_PROGRESS})
# The image exists and is paid for; only delivery is left.
MADE_STATES = frozenset({JobState.COMPLETED, JobState.DELIVERING})

# The one column per state that records when the job entered it (None: no stamp of its own).
STATE_TIMESTAMP: dict[JobState, str | None] = {
    JobState.WAITING: "created_at",
    JobState.SUBMITTING: "created_at",
    JobState.IN_QUEUE: "queued_at",
    JobState.IN_PROGRESS: "started_at",
    JobState.COMPLETED: "completed_at",
    JobState.DELIVERING: None,
    JobState.DELIVERED: "finished_at",
    JobState.UNDELIVERABLE: "finished_at",
    JobState.FAILED: "finished_at",
    JobState.CANCELLED: "finished_at",
}


class FailureKind(StrEnum):
    """How a failed job's notice reads: kept with the job, so a notice shown after a restart reads the same."""

    RETRYABLE = "retryable"  # worth another try: the notice offers 🔄
    FINAL = "final"  # trying again will not help (a refused key, a job lost upstream)
    REFUSED = "refused"  # the image service refused the content: the notice hides the prompt


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
class JobInput:
    """The image an edit starts from: its verified bytes, kept with the job (the URL sent upstream expires)."""

    content_type: str
    width: int
    height: int
    data: bytes = dataclasses.field(repr=False)


@dataclass(frozen=True, slots=True)
class StoredInput:
    """An input image already stored with an earlier job (a reroll or remix of an edit starts from it): the new
    job names the same stored image instead of storing the bytes again."""

    image_id: int


@dataclass(frozen=True, slots=True)
class NewJob:
    """What is known before anything is sent to RunComfy."""

    model: str
    prompt: str
    aspect_ratio: str
    seed: int
    origin: JobOrigin = JobOrigin()
    parent_id: int | None = None
    exempt: bool = False  # the member's own limits do not apply (admin bypass); the server's still do
    count: int = 1  # images the one request makes
    cost_usd: float | None = None  # the estimate (the model's base price × count) until RunComfy says
    input_url: str | None = None  # the image an edit sends upstream, while it lives
    input_expires_at: datetime | None = None
    # The stored image a reroll or remix shares; a member's new image is stored once read (JobStore.give_input).
    input: StoredInput | None = None


@dataclass(frozen=True, slots=True)
class Lease:
    """Which process works on a job, and until when (PostgreSQL, several processes): a job is created holding
    its creator's lease, and only the holder may change it."""

    owner: str
    until: datetime


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
    deleted_at: datetime | None = None  # when the reply was deleted (by its Delete button, or by anyone)
    exempt: bool = False
    failure_kind: FailureKind | None = None
    delivery_attempts: int = 0
    deliver_at: datetime | None = None  # the next delivery attempt (image or notice); None when nothing is owed
    delivery_error: str | None = None  # why the last delivery attempt did not get through
    post_nonce: str | None = None  # Discord nonce for any message the bot posts for this job (never posted twice)
    count: int = 1  # images asked for in the one request
    result_urls: str | None = None  # every image's URL, a JSON array (result_url is the first)
    input_url: str | None = None  # an edit's input image, as sent upstream
    input_expires_at: datetime | None = None  # when input_url stops working (Discord's links expire)
    input_image_id: int | None = None  # the stored input image, shared by the rerolls and remixes of an edit

    @property
    def images(self) -> tuple[str, ...]:
        """The URLs of every image the job made, in order."""
        if self.result_urls:
            return tuple(json.loads(self.result_urls))
        return (self.result_url,) if self.result_url else ()

    @property
    def awaits_input(self) -> bool:
        """An edit written before its image was downloaded, not given the image yet: it must never be sent."""
        return self.input_url is not None and self.input_image_id is None

    @property
    def notice_pending(self) -> bool:
        """A failed or cancelled job whose member has not been shown that yet."""
        return self.state in (JobState.FAILED, JobState.CANCELLED) and self.deliver_at is not None

    @property
    def owes_delivery(self) -> bool:
        """Something (the image, or the notice of its end) still has to reach the member."""
        return self.deliver_at is not None and (self.state in MADE_STATES or self.notice_pending)


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
    member_concurrent: int = 3  # a member's jobs generating at once; more wait in the server's line
    member_queue: int = 10  # a member's jobs waiting in the line; past this a new one is refused
    member_daily: int = 25
    guild_concurrent: int = 10
    admins_bypass: bool = True
    banned_terms: tuple[str, ...] = ()
    reaction_reroll: bool = True
    show_cost: bool = False
    allowed_models: str | None = None  # model ids, space-separated; None: every model the bot offers
    default_model: str | None = None  # None: the bot's default model
    updated_at: datetime | None = None
    updated_by: int | None = None


# The scalar settings a server can change, by column name (lists have their own tables).
GUILD_SETTING_COLUMNS = (
    "default_aspect_ratio",
    "member_concurrent",
    "member_queue",
    "member_daily",
    "guild_concurrent",
    "admins_bypass",
    "reaction_reroll",
    "show_cost",
    "allowed_models",
    "default_model",
)


@dataclass(frozen=True, slots=True)
class GuildLoad:
    """How busy a server is: what admission decides on, counted by the database, not by loading rows."""

    mine_active: int  # the asking member's jobs holding a slot there
    mine_waiting: int  # the asking member's jobs in the server's line
    active: int  # jobs holding a slot (submitting to in_progress)
    waiting: int  # jobs in the server's line


@dataclass(frozen=True, slots=True)
class Spend:
    """What the whole bot made and spent in a window: `cost_usd` is what is known, `unpriced` jobs have no cost
    yet (waiting, running, or RunComfy sent none), so the caller prices them at the model's base price."""

    images: int
    cost_usd: float
    unpriced: int

    def estimate(self, price: float | None) -> float:
        return self.cost_usd + self.unpriced * (price or 0.0)


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
