"""What an image cost: RunComfy's figure when the result carries one, else the model's base price.

The poller asks for results with `include_cost=true` and stores what comes
back in `job.cost_usd`. RunComfy does not document that field, so when it is
missing the model's base price (from the model-info endpoint) stands in, with
`cost_estimated` set so every report can say "about".

The price is asked for once and remembered. Callers never wait behind a lock
held across the network: concurrent askers share one request in flight, and a
failed ask is remembered for `retry_after` seconds, so an unreachable
model-info endpoint costs one request per few minutes, not one per image.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from bot.clock import Clock
from bot.runcomfy import RunComfyError
from bot.runcomfy_models import ModelInfo

log = logging.getLogger(__name__)


class PriceBook:
    def __init__(self, fetch: Callable[[], Awaitable[ModelInfo]], clock: Clock, *, retry_after: float = 300.0) -> None:
        self._fetch = fetch
        self._clock = clock
        self._retry_after = timedelta(seconds=retry_after)
        self._price: float | None = None
        self._known = False
        self._failed_at: datetime | None = None
        self._asking: asyncio.Task[float | None] | None = None

    def known(self) -> float | None:
        """The base price if it was learned already (no request: the admission path must not wait on one)."""
        return self._price if self._known else None

    async def base_price(self) -> float | None:
        """USD per image, or None when RunComfy does not say (or could not be asked lately)."""
        if self._known:
            return self._price
        if self._failed_at is not None and self._clock.now() - self._failed_at < self._retry_after:
            return None
        if self._asking is None or self._asking.done():
            self._asking = asyncio.create_task(self._ask(), name="model-price")
        return await asyncio.shield(self._asking)

    async def _ask(self) -> float | None:
        try:
            info = await self._fetch()
        except RunComfyError as error:
            log.warning("model info unavailable, no cost estimate for a while: %s", error)
            self._failed_at = self._clock.now()
            return None
        self._price = info.base_price_usd
        self._known = True
        return self._price

    async def close(self) -> None:
        """Stop an ask in flight (at shutdown)."""
        if self._asking is not None and not self._asking.done():
            self._asking.cancel()
            await asyncio.gather(self._asking, return_exceptions=True)
