"""The operator's budget: what the whole bot may make and spend, all servers together.

Every image is paid by the operator's RunComfy account, while any server's
owner can raise their own server's limits. So before a Discord job is written
(a command, a reroll, a remix, an admin's job alike: nothing bypasses it) the
line asks here, and one aggregate of the store says what the bot made today
and spent today and this month (UTC). A job counts from the moment it is
written, priced at the model's base price until RunComfy says what it cost.
The refusal says when the window resets; the operator sees it in the log (once
per window) and in `/metrics`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.clock import Clock
from bot.jobs.limits import Limit, LimitReachedError
from storage.base import JobStore
from storage.models import Spend

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Budget:
    """The caps; 0 means no cap of that kind."""

    images_per_day: int = 0
    usd_per_day: float = 0.0
    usd_per_month: float = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self.images_per_day or self.usd_per_day or self.usd_per_month)


@dataclass(frozen=True, slots=True)
class BudgetState:
    """Where the whole bot stands: what `/imagine-admin usage` and `/metrics` show."""

    budget: Budget
    today: Spend
    month: Spend
    price: float | None
    day_resets: datetime
    month_resets: datetime

    @property
    def spent_today(self) -> float:
        return self.today.estimate(self.price)

    @property
    def spent_this_month(self) -> float:
        return self.month.estimate(self.price)

    def refusal(self, images: int = 1, cost: float | None = None) -> LimitReachedError | None:
        """Why `images` more images (costing `cost`, else the base price each) would pass a cap, or None."""
        budget = self.budget
        price = cost if cost is not None else (self.price or 0.0) * images
        if budget.images_per_day and self.today.images + images > budget.images_per_day:
            return LimitReachedError(
                Limit.BOT_IMAGES,
                used=self.today.images,
                allowed=budget.images_per_day,
                frees_at=self.day_resets,
                asked=images,
            )
        dollars = (
            (Limit.BOT_DAY_USD, self.spent_today, budget.usd_per_day, self.day_resets),
            (Limit.BOT_MONTH_USD, self.spent_this_month, budget.usd_per_month, self.month_resets),
        )
        for limit, spent, allowed, resets in dollars:
            if allowed and spent + price > allowed:
                return LimitReachedError(
                    limit, used=round(spent, 2), allowed=allowed, frees_at=resets, asked=images, cost=price
                )
        return None


class BudgetGuard:
    def __init__(self, store: JobStore, clock: Clock, budget: Budget, price: Callable[[], float | None]) -> None:
        self.store = store
        self.clock = clock
        self.budget = budget
        self._price = price
        self._warned: set[tuple[Limit, datetime]] = set()
        self.last: BudgetState | None = None

    async def state(self) -> BudgetState:
        now = self.clock.now()
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        month = day.replace(day=1)
        next_month = (month + timedelta(days=32)).replace(day=1)
        today, this_month = await self.store.spend(day=day, month=month)
        self.last = BudgetState(self.budget, today, this_month, self._price(), day + timedelta(days=1), next_month)
        return self.last

    async def check(self, images: int = 1, cost: float | None = None) -> None:
        """LimitReachedError when `images` more images (costing `cost`) would pass one of the operator's caps."""
        if not self.budget.enabled:
            return
        refusal = (await self.state()).refusal(images, cost)
        if refusal is None:
            return
        window = (refusal.limit, refusal.frees_at or self.clock.now())
        if window not in self._warned:
            self._warned.add(window)
            log.warning(
                "the bot's budget is reached (%s: %s of %s); new jobs are refused until %s",
                refusal.limit.value,
                refusal.used,
                refusal.allowed,
                refusal.frees_at.isoformat(timespec="minutes") if refusal.frees_at else "?",
            )
        raise refusal
