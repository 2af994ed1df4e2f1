"""Snowflake ids: real timestamps in the top bits, so discord.py's `created_at` makes sense."""

from __future__ import annotations

import secrets
import time

DISCORD_EPOCH_MS = 1420070400000


class Snowflakes:
    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        candidate = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        if candidate <= self._last:
            candidate = self._last + 1
        self._last = candidate
        return candidate


def new_token(prefix: str) -> str:
    """An opaque token; interaction tokens are long random strings on Discord too."""
    return f"{prefix}.{secrets.token_urlsafe(24)}"
