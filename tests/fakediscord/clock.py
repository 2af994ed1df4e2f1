"""The fake's clock: real monotonic time plus an offset a test can move forward.

Deadlines (the 3 s acknowledgement window, the 15 min interaction token, rate-limit
windows) are measured on this clock, so `clock.advance(16 * 60)` expires a token at
once without the test waiting. The bot under test keeps its own real clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class FakeClock:
    def __init__(self) -> None:
        self.offset = 0.0
        self._listeners: list[Callable[[], None]] = []

    def now(self) -> float:
        """Monotonic seconds, including every `advance` so far."""
        return time.monotonic() + self.offset

    def wall(self) -> float:
        """Unix seconds as a member of the guild would see them (message timestamps)."""
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        """Jump forward; listeners run at once, so expired deadlines are recorded before this returns."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self.offset += seconds
        for listener in list(self._listeners):
            listener()

    def on_advance(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)
