"""The limits a new job can meet, as facts (which limit, how much is used, when it frees up) the cogs put in
words: a member's own (daily quota, their share of the server's line) and the operator's (the whole bot's
budget)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum


class Limit(StrEnum):
    DAILY = "daily"  # the member's images in any 24 hours
    QUEUE = "queue"  # the member's jobs waiting in the server's line
    BOT_IMAGES = "bot_images"  # the whole bot's images today (UTC)
    BOT_DAY_USD = "bot_day_usd"  # the whole bot's spend today (UTC)
    BOT_MONTH_USD = "bot_month_usd"  # the whole bot's spend this month (UTC)

    @property
    def operators(self) -> bool:
        """Set by the bot's operator for all servers together, not by a server."""
        return self in (Limit.BOT_IMAGES, Limit.BOT_DAY_USD, Limit.BOT_MONTH_USD)


class LimitReachedError(Exception):
    """A limit says no before anything is written; the numbers let the cog say so in one sentence."""

    def __init__(
        self,
        limit: Limit,
        *,
        used: float,
        allowed: float,
        frees_at: datetime | None = None,
        asked: int = 1,
        cost: float | None = None,
    ) -> None:
        super().__init__(f"{limit.value} limit reached: {used} of {allowed}")
        self.asked = asked  # images the refused job asked for (a gallery may pass a limit one image would not)
        self.cost = cost  # what the refused job would have cost (USD), for the operator's dollar caps
        self.limit = limit
        self.used = used
        self.allowed = allowed
        self.frees_at = frees_at
