"""What the job manager tells its listeners: one event per transition a job makes.

Events carry the job row as it was written, so a listener never has to ask the
store again. Listeners are plain functions called synchronously by the one
place that writes states (`bot/jobs/ledger.py`): they must return quickly and
never wait on Discord or the network (the Discord cog queues an edit, metrics
count, the CLI resolves a future), so no listener can hold up a poll or a
delivery.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from storage.models import FailureKind, Job


class WaitReason(StrEnum):
    SERVER = "server"  # every one of the server's slots is taken
    MEMBER = "member"  # the member has as many jobs running as they may
    CREDIT = "credit"  # RunComfy said the operator's account has no credit left; it starts when it is back


@dataclass(frozen=True, slots=True)
class JobAccepted:
    """Written in `waiting` before its reply exists; `position` is its place in the server's line then."""

    job: Job
    position: int


@dataclass(frozen=True, slots=True)
class JobWaiting:
    """In its server's line with its reply shown, nothing sent yet: `position` is its place (1 = next), `reason`
    whether the server's slots are full or the member already has as many jobs running as they may. Sent again
    whenever either changes."""

    job: Job
    position: int
    reason: WaitReason = WaitReason.SERVER


@dataclass(frozen=True, slots=True)
class JobSubmitting:
    """Left the line; being sent to RunComfy."""

    job: Job


@dataclass(frozen=True, slots=True)
class JobQueued:
    """Accepted by RunComfy and waiting there; `position` is RunComfy's queue position when it gives one."""

    job: Job
    position: int | None


@dataclass(frozen=True, slots=True)
class JobRunning:
    """Generating; `eta` is when similar jobs finished. `overdue`: past the job timeout but running (and billed),
    so it is waited for rather than thrown away."""

    job: Job
    eta: datetime | None
    overdue: bool = False


@dataclass(frozen=True, slots=True)
class JobCompleted:
    """RunComfy made the image (paid for); its delivery follows as a stage of its own."""

    job: Job


@dataclass(frozen=True, slots=True)
class JobDelivering:
    """A delivery attempt (of the image) begins; `attempt` counts from 1 across restarts."""

    job: Job
    attempt: int


@dataclass(frozen=True, slots=True)
class DeliveryDelayed:
    """An attempt did not get through (Discord down, rate limited, …); the next one is at `retry_at`."""

    job: Job
    reason: str
    retry_at: datetime


@dataclass(frozen=True, slots=True)
class JobDelivered:
    """The image is where it belongs; `how` names the route (interaction, channel_edit, new_message, text, file)."""

    job: Job
    how: str


@dataclass(frozen=True, slots=True)
class JobUndeliverable:
    """Made and paid for, but its destination is gone (or unreachable for the whole retry window)."""

    job: Job
    reason: str


@dataclass(frozen=True, slots=True)
class JobFailed:
    """Ended without an image. `reason` is one safe sentence for the member; `detail` is for the operator (the
    upstream message, code and the setting to check), never shown to members."""

    job: Job
    reason: str
    kind: FailureKind
    detail: str | None = None

    @property
    def retryable(self) -> bool:
        return self.kind is FailureKind.RETRYABLE


@dataclass(frozen=True, slots=True)
class JobCancelled:
    job: Job
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ReplyGone:
    """The job's reply is gone (deleted, or its channel or server): nothing more is sent for it."""

    job: Job
    reason: str


@dataclass(frozen=True, slots=True)
class NoticeShown:
    """The member was shown how a failed or cancelled job ended (Discord confirmed it)."""

    job: Job
    how: str


@dataclass(frozen=True, slots=True)
class NoticeLost:
    """The end of a failed or cancelled job could not be shown (its reply or channel is gone)."""

    job: Job
    reason: str


JobEvent = (
    JobAccepted
    | JobWaiting
    | JobSubmitting
    | JobQueued
    | JobRunning
    | JobCompleted
    | JobDelivering
    | DeliveryDelayed
    | JobDelivered
    | JobUndeliverable
    | JobFailed
    | JobCancelled
    | ReplyGone
    | NoticeShown
    | NoticeLost
)
Listener = Callable[[JobEvent], None]
