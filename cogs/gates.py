"""`Gate`: at most so many admissions of one key within a sliding window, in this process's memory.

For limits that only this process needs to keep (a member's ✉️ details and
DMs, answered by the process whose shard got the click); what several
processes must agree on is a key in the database (`JobStore.once`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable


class Gate:
    """At most `per` admissions of one key within `window` seconds (a sliding window)."""

    def __init__(self, window: float, *, per: int = 1, clock: Callable[[], float] = time.monotonic):
        self.window = window
        self.per = per
        self.clock = clock
        self._seen: dict[Hashable, list[float]] = {}

    def admit(self, *key: Hashable) -> bool:
        """True if `key` was admitted fewer than `per` times within the window (and counts this one)."""
        now = self.clock()
        self._seen = {
            seen: kept for seen, times in self._seen.items() if (kept := [t for t in times if now - t < self.window])
        }
        times = self._seen.setdefault(key, [])
        if len(times) >= self.per:
            return False
        times.append(now)
        return True
