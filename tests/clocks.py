"""Clocks for tests: the bot's `Clock`, moved forward on demand so hours pass in milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.clock import Clock
from tests.fakediscord import FakeClock


class MovableClock(Clock):
    """Real time plus an offset a test moves forward; the job workers wake at once when it moves."""

    def __init__(self) -> None:
        super().__init__()
        self.offset = timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)
        self.jumped()


class FakeDiscordClock(Clock):
    """The fake Discord's clock as the bot's: advancing it expires interaction tokens, runs the bot's deadlines
    and brings due delivery retries forward, all together."""

    def __init__(self, fake_clock: FakeClock) -> None:
        super().__init__()
        self.fake_clock = fake_clock
        fake_clock.on_advance(self.jumped)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.fake_clock.wall(), UTC)
