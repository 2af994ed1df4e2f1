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

    def next_on_shard(self, shard_id: int, num_shards: int) -> int:
        """The next id that Discord routes to `shard_id` of `num_shards`: (id >> 22) % num_shards == shard_id.

        Ids made in the same millisecond share their top bits and so their shard; this one
        moves the timestamp up to num_shards - 1 ms ahead instead.
        """
        if not 0 <= shard_id < num_shards:
            raise ValueError(f"no shard {shard_id} among {num_shards}")
        candidate = self.next()
        timestamp = candidate >> 22
        if timestamp % num_shards != shard_id:
            candidate = (timestamp + (shard_id - timestamp) % num_shards) << 22
            self._last = candidate
        return candidate


def new_token(prefix: str) -> str:
    """An opaque token; interaction tokens are long random strings on Discord too."""
    return f"{prefix}.{secrets.token_urlsafe(24)}"
