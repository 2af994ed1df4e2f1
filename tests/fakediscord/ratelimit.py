"""Rate limits as Discord serves them (docs/discord-platform.md, RL).

Per-route buckets keyed by the route's major parameter (channel, guild, webhook+token)
with real `X-RateLimit-*` headers; a global 50/s per bot token that interaction and
webhook-token routes skip; 429 bodies `{message, retry_after, global}` with
`Retry-After` and `Via: 1.1 google` (discord.py only retries 429s that carry `Via`);
and the 10,000 invalid requests per 10 minutes after which Cloudflare answers a bare 429.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import deque
from dataclasses import dataclass, field

from .clock import FakeClock

MESSAGE_EDIT = "PATCH /channels/{channel_id}/messages/{message_id}"
REACTION_ADD = "PUT /channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me"
REACTION_REMOVE = "DELETE /channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me"


@dataclass
class BucketSpec:
    limit: int
    per: float
    advertise: bool = True  # False: a hidden sub-limit, no headers warn the client before the 429


@dataclass
class RouteInfo:
    """What the fake knows about a request before handling it."""

    method: str
    template: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    bot_auth: bool = False
    token_route: bool = False

    @property
    def key(self) -> str:
        return f"{self.method} {self.template}"

    @property
    def major(self) -> str:
        for name in ("channel_id", "guild_id"):
            if name in self.params:
                return self.params[name]
        if "webhook_id" in self.params:
            return f"{self.params['webhook_id']}+{self.params.get('webhook_token', '')}"
        return ""


@dataclass
class Decision:
    headers: dict[str, str]
    limited: bool = False
    retry_after: float = 0.0
    is_global: bool = False

    def body(self) -> dict[str, object]:
        return {"message": "You are being rate limited.", "retry_after": self.retry_after, "global": self.is_global}


@dataclass
class _Window:
    start: float
    count: int = 0


DEFAULT_BUCKETS: dict[str, BucketSpec] = {
    "POST /channels/{channel_id}/messages": BucketSpec(5, 5.0),
    MESSAGE_EDIT: BucketSpec(5, 5.0),
    "DELETE /channels/{channel_id}/messages/{message_id}": BucketSpec(5, 1.0),
    REACTION_ADD: BucketSpec(1, 0.25),
    REACTION_REMOVE: BucketSpec(1, 0.25),
    "POST /webhooks/{webhook_id}/{webhook_token}": BucketSpec(5, 2.0),
    "PATCH /webhooks/{webhook_id}/{webhook_token}/messages/@original": BucketSpec(5, 2.0),
    "PATCH /webhooks/{webhook_id}/{webhook_token}/messages/{message_id}": BucketSpec(5, 2.0),
}


def retry_headers(retry_after: float, *, scope: str, is_global: bool = False) -> dict[str, str]:
    headers = {
        "Retry-After": str(max(1, math.ceil(retry_after))),
        "Via": "1.1 google",
        "X-RateLimit-Scope": scope,
    }
    if is_global:
        headers["X-RateLimit-Global"] = "true"
    return headers


class RateLimiter:
    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self.buckets: dict[str, BucketSpec] = dict(DEFAULT_BUCKETS)
        self.default_bucket = BucketSpec(50, 1.0)
        self.global_limit = 50
        self.global_per = 1.0
        self.enabled = True
        self.invalid_limit = 10_000
        self.invalid_window = 600.0
        self.served_429 = 0
        self._windows: dict[tuple[str, str], _Window] = {}
        self._global: dict[str, deque[float]] = {}
        self._invalid: deque[float] = deque()

    def set_bucket(self, route: str, limit: int, per: float, *, advertise: bool = True) -> None:
        """E.g. `set_bucket("PATCH /channels/{channel_id}/messages/{message_id}", limit=5, per=5.0)`, per channel."""
        self.buckets[route] = BucketSpec(limit, per, advertise)
        self._windows = {k: w for k, w in self._windows.items() if k[0] != route}

    def bucket_hash(self, route: str) -> str:
        return hashlib.sha1(route.encode(), usedforsecurity=False).hexdigest()[:32]

    def check(self, info: RouteInfo, token: str | None) -> Decision:
        """Count this request; a `limited` decision means answer 429 instead of handling it."""
        if not self.enabled:
            return Decision({})
        now = self._clock.now()
        if token is not None and info.bot_auth and not info.token_route:
            hits = self._global.setdefault(token, deque())
            while hits and now - hits[0] >= self.global_per:
                hits.popleft()
            if len(hits) >= self.global_limit:
                retry = round(hits[0] + self.global_per - now, 3)
                return Decision(retry_headers(retry, scope="global", is_global=True), True, retry, is_global=True)
            hits.append(now)
        spec = self.buckets.get(info.key, self.default_bucket)
        window = self._windows.get((info.key, info.major))
        if window is None or now >= window.start + spec.per:
            window = self._windows[(info.key, info.major)] = _Window(now)
        reset_after = max(0.0, window.start + spec.per - now)
        headers = {
            "X-RateLimit-Limit": str(spec.limit),
            "X-RateLimit-Remaining": str(max(0, spec.limit - window.count - 1)),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": self.bucket_hash(info.key),
        }
        if window.count >= spec.limit:
            retry = round(reset_after, 3)
            limited = retry_headers(retry, scope="user")
            if spec.advertise:
                limited |= headers | {"X-RateLimit-Remaining": "0"}
            return Decision(limited, True, retry)
        window.count += 1
        return Decision(headers if spec.advertise else {})

    def record_status(self, status: int, scope: str | None) -> None:
        """Count 401/403/429 toward the Cloudflare ban (shared-scope 429s don't count)."""
        if status == 429:
            self.served_429 += 1
        if status in (401, 403) or (status == 429 and scope != "shared"):
            self._invalid.append(self._clock.now())

    def banned(self) -> bool:
        now = self._clock.now()
        while self._invalid and now - self._invalid[0] >= self.invalid_window:
            self._invalid.popleft()
        return len(self._invalid) >= self.invalid_limit

    @property
    def invalid_count(self) -> int:
        self.banned()
        return len(self._invalid)
