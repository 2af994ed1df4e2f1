"""Settings for a bot pointed at the fake Discord and the emulator: one builder for every test that runs one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot.emulator import Emulator
from bot.settings import Settings
from tests.fakediscord import FakeDiscord

QUICK_POLLING: dict[str, Any] = {"poll_min_interval_seconds": 0.05, "poll_max_interval_seconds": 0.25}


def bot_settings(
    fake: FakeDiscord, emulator: Emulator, *, token: str, database_path: Path, guild_ids: list[int], **overrides: Any
) -> Settings:
    """No `.env` is read (pydantic-settings' documented test override); `overrides` are further fields."""
    return Settings(
        _env_file=None,
        discord_token=fake.bot_token,
        runcomfy_api_token=token,
        runcomfy_base_url=emulator.url,
        database_path=database_path,
        discord_guild_ids=guild_ids,
        discord_api_base_url=fake.rest_base,
        discord_gateway_url=fake.gateway_url,
        **overrides,
    )
