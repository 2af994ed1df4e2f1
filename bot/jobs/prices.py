"""What an image cost: RunComfy's figure when the result carries one, else the model's base price.

The poller asks for results with `include_cost=true` and stores what comes
back in `job.cost_usd`. RunComfy does not document that field, so when it is
missing the model's base price (from the model-info endpoint) stands in, with
`cost_estimated` set so every report can say "about".

Each model's price is asked for once and remembered (a job is priced at
its own model's, times its images; the estimate written with the job, from
the model's description, gives way to RunComfy's base price once known). Callers never wait behind a lock
held across the network: concurrent askers share one request in flight, and a
failed ask is remembered for `retry_after` seconds, so an unreachable
model-info endpoint costs one request per few minutes, not one per image.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.clock import Clock
from bot.runcomfy import RunComfyError
from bot.runcomfy_models import ModelInfo

log = logging.getLogger(__name__)


@dataclass
class _Asked:
    """What is known of one model's price: the answer, or when asking last failed, and an ask in flight."""

    price: float | None = None
    known: bool = False
    failed_at: datetime | None = None
    asking: asyncio.Task[float | None] | None = None


class PriceBook:
    """Every model's base price, asked for once each; `model` None means the bot's default model."""

    def __init__(
        self,
        fetch: Callable[[str | None], Awaitable[ModelInfo]],
        clock: Clock,
        *,
        default: str | None = None,
        retry_after: float = 300.0,
    ) -> None:
        self._fetch = fetch
        self._default = default
        self._clock = clock
        self._retry_after = timedelta(seconds=retry_after)
        self._models: dict[str | None, _Asked] = {}

    def known(self, model: str | None = None) -> float | None:
        """The base price if it was learned already (no request: the admission path must not wait on one)."""
        asked = self._models.get(model or self._default)
        return asked.price if asked is not None and asked.known else None

    async def base_price(self, model: str | None = None) -> float | None:
        """USD per image, or None when RunComfy does not say (or could not be asked lately)."""
        model = model or self._default
        asked = self._models.setdefault(model, _Asked())
        if asked.known:
            return asked.price
        if asked.failed_at is not None and self._clock.now() - asked.failed_at < self._retry_after:
            return None
        if asked.asking is None or asked.asking.done():
            asked.asking = asyncio.create_task(self._ask(model, asked), name="model-price")
        return await asyncio.shield(asked.asking)

    async def _ask(self, model: str | None, asked: _Asked) -> float | None:
        try:
            info = await self._fetch(model)
        except RunComfyError as error:
            log.warning("model info unavailable, no cost estimate for a while: %s", error)
            asked.failed_at = self._clock.now()
            return None
        asked.price = info.base_price_usd
        asked.known = True
        return asked.price

    async def close(self) -> None:
        """Stop the asks in flight (at shutdown)."""
        tasks = [
            asked.asking for asked in self._models.values() if asked.asking is not None and not asked.asking.done()
        ]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
