"""Fault injection for chaos tests: chosen 5xx/429 answers on chosen routes, or a random rate of them."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from .ratelimit import RouteInfo

Matcher = str | Callable[[RouteInfo], bool]


@dataclass
class Fault:
    """Answer `status` instead of (or, with `after=True`, after) handling a matching request; status 0 cuts the
    connection without an answer."""

    match: Matcher
    status: int = 500
    times: int | None = 1  # None: forever
    retry_after: float = 0.1
    after: bool = False  # the request takes effect, then the client sees the error (a lost response)
    served: int = 0

    def matches(self, info: RouteInfo) -> bool:
        if self.times is not None and self.served >= self.times:
            return False
        if callable(self.match):
            return bool(self.match(info))
        return self.match in (info.key, info.template, info.path)


class FaultInjector:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.faults: list[Fault] = []
        self.rate = 0.0
        self.random_statuses: tuple[int, ...] = (500, 502, 429)
        # True: random faults also hit edits and followups made with an interaction token (never the callback,
        # whose 3 s window is the member's business, not the bot's).
        self.token_routes = False
        self.served: list[tuple[str, int]] = []

    def add(self, fault: Fault) -> Fault:
        self.faults.append(fault)
        return fault

    def pick(self, info: RouteInfo, *, after: bool) -> Fault | None:
        for fault in self.faults:
            if fault.after == after and fault.matches(info):
                fault.served += 1
                self.served.append((info.key, fault.status))
                return fault
        # Random faults hit bot REST calls (and, if asked, token routes), before handling (like a flaky edge).
        eligible = info.bot_auth or (self.token_routes and info.token_route and not info.key.endswith("/callback"))
        if not after and self.rate > 0 and eligible and self.rng.random() < self.rate:
            status = self.rng.choice(self.random_statuses)
            self.served.append((info.key, status))
            return Fault(info.key, status=status, retry_after=round(self.rng.uniform(0.05, 0.3), 3))
        return None


@dataclass
class Outage:
    """Discord down for the bot's REST calls: every one answers `status`, or (`drop`) loses its connection."""

    status: int = 503
    drop: bool = False
    served: int = 0

    def applies(self, info: RouteInfo) -> bool:
        return not info.key.endswith("/callback")


@dataclass
class Hold:
    """Requests matching `match` wait (unanswered, like a slow Discord) until `release()`; `waiting` counts them."""

    match: Matcher
    released: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: int = 0

    def matches(self, info: RouteInfo) -> bool:
        if callable(self.match):
            return bool(self.match(info))
        return self.match in (info.key, info.template, info.path)

    def release(self) -> None:
        self.released.set()
