"""What the job manager tells its subscribers: the CLI, the Discord cog, the benchmarks.

Events carry the job row as it was written, so a subscriber never has to ask
the store again to render it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from bot.runcomfy import DownloadedImage
from storage.models import Job


@dataclass(frozen=True, slots=True)
class JobQueued:
    """Submitted and waiting upstream; `position` is RunComfy's queue position when it gives one."""

    job: Job
    position: int | None


@dataclass(frozen=True, slots=True)
class JobRunning:
    """Generating; `eta` is when similar jobs finished, once enough of them were seen."""

    job: Job
    eta: datetime | None


@dataclass(frozen=True, slots=True)
class JobCompleted:
    """The image is downloaded and verified; the subscriber delivers it and calls `mark_delivered`."""

    job: Job
    image: DownloadedImage


@dataclass(frozen=True, slots=True)
class JobFailed:
    """The job ended without an image; `reason` is one plain sentence for the member."""

    job: Job
    reason: str
    retryable: bool


@dataclass(frozen=True, slots=True)
class JobCancelled:
    job: Job


JobEvent = JobQueued | JobRunning | JobCompleted | JobFailed | JobCancelled
Subscriber = Callable[[JobEvent], Awaitable[None]]
