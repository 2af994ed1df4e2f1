"""What an image cost: RunComfy's figure when the result carries one, else the model's base price.

The job manager asks for results with `include_cost=true` and stores what
comes back in `job.cost_usd`. RunComfy does not document that field, so when
it is missing the model's base price (from the model-info endpoint, fetched
once) stands in, with `cost_estimated` set so every report can say "about".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bot.runcomfy import RunComfyError
from bot.runcomfy_models import ModelInfo

log = logging.getLogger(__name__)


def money(amount: float, *, estimated: bool = False) -> str:
    """`$0.03`, `$0.0125`, or `≈ $0.03` for an estimate."""
    text = f"${amount:,.2f}" if round(amount, 2) == round(amount, 6) else f"${amount:,.4f}"
    return f"≈ {text}" if estimated else text


class PriceBook:
    """The model's base price, asked for once and remembered (a failed ask is retried next time)."""

    def __init__(self, fetch: Callable[[], Awaitable[ModelInfo]]) -> None:
        self._fetch = fetch
        self._price: float | None = None
        self._known = False
        self._lock = asyncio.Lock()

    async def base_price(self) -> float | None:
        """USD per image, or None when RunComfy does not say (or cannot be asked right now)."""
        async with self._lock:
            if not self._known:
                try:
                    info = await self._fetch()
                except RunComfyError as error:
                    log.warning("model info unavailable, no cost estimate this time: %s", error)
                    return None
                self._price = info.base_price_usd
                self._known = True
            return self._price
