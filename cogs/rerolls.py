"""One reroll per member and image within a few seconds.

A double click, or a click plus a 🔄 reaction, arrives as separate Discord
events a moment apart; without this gate each would start (and bill) a job.
"""

from __future__ import annotations

import time
from collections.abc import Callable

WINDOW_SECONDS = 10.0


class RerollGate:
    def __init__(self, window: float = WINDOW_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.clock = clock
        self._last: dict[tuple[int, int], float] = {}

    def admit(self, user_id: int, job_id: int) -> bool:
        """True for the first request of `user_id` on `job_id` within the window; False for repeats."""
        now = self.clock()
        self._last = {key: at for key, at in self._last.items() if now - at < self.window}
        key = (user_id, job_id)
        if key in self._last:
            return False
        self._last[key] = now
        return True
