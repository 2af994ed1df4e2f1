"""The emulator's jobs: a fixed timeline drawn at submit, from which every answer is computed.

Kept apart from the HTTP server (`bot.emulator`) so the timeline rules (queue
position counting down, phases, wall-clock stamps) read on their own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any


@dataclass(frozen=True)
class SubmitRecord:
    """A submit that created a job: what was sent and the id it got."""

    request_id: str
    body: dict[str, Any]
    received_at: float


@dataclass
class EmulatedJob:
    """One job and its fixed timeline; its state at any moment is computed, not stored."""

    request_id: str
    prompt: str
    seed: int
    aspect_ratio: str
    owner: str
    created: float
    created_wall: datetime
    queue_wait: float
    run_time: float
    fails: bool
    position_start: int
    model: str = ""
    count: int = 1  # images the job makes
    failure: str | None = None  # why it fails, when it fails for a reason of its own (an input it could not fetch)
    cancelled_at: float | None = None
    expired: bool = False

    @property
    def started(self) -> float:
        return self.created + self.queue_wait

    @property
    def finished(self) -> float:
        return self.started + self.run_time

    def phase(self, now: float) -> str:
        """The /status vocabulary: in_queue, in_progress, completed or cancelled."""
        if self.cancelled_at is not None:
            return "cancelled"
        if now < self.started:
            return "in_queue"
        if now < self.finished:
            return "in_progress"
        return "completed"

    def queue_position(self, now: float) -> int:
        """Counts down from `position_start` to 1 over the queue wait."""
        if self.queue_wait <= 0:
            return 1
        remaining = max(0.0, self.started - now) / self.queue_wait
        return max(1, math.ceil(self.position_start * remaining))

    def wall(self, moment: float) -> str:
        return (self.created_wall + timedelta(seconds=moment - self.created)).isoformat().replace("+00:00", "Z")
