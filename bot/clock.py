"""The bot's idea of "now", in one object the job workers share.

Deadlines, retry times and token expiries are all datetimes compared with
`Clock.now()`. The system clock never jumps; a test clock can, and tells the
workers so through `on_jump`, so a ten-minute Discord outage or a bot kept
down for twenty minutes is tested in seconds instead of waited out.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime


class Clock:
    """The system's UTC wall clock. Subclasses (tests) may move it forward and call `jumped()`."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[], None]] = []

    def now(self) -> datetime:
        return datetime.now(UTC)

    def on_jump(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener` whenever the clock jumps forward; returns the function that stops that."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    def jumped(self) -> None:
        """Tell every listener that `now()` moved on by more than the time that passed."""
        for listener in list(self._listeners):
            listener()
