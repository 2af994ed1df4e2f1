"""All configuration, read once from the environment and `.env`.

This is the only module that looks at the environment: everything else takes a
`Settings` (or the few values it needs) as an argument, so tests build one with
keyword overrides and nothing leaks between them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_MODEL = "imagineart/imagineart-1.5-preview/text-to-image"
MIB = 1024 * 1024

# Where an operator gets each secret: the one line printed when it is missing.
TOKEN_HELP = {
    "DISCORD_TOKEN": "create a bot at https://discord.com/developers/applications (Bot → Reset Token)",
    "RUNCOMFY_API_TOKEN": "create an API key in your RunComfy profile (https://www.runcomfy.com/profile)",
}


class MissingSettingError(Exception):
    """A setting a command needs is missing or empty; the text names it and says where to get it."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"{name} is not set: {TOKEN_HELP.get(name, 'set it in the environment or in .env')}")


def _split_csv(value: object) -> object:
    """Accept `1,2,3` from the environment as well as a list from code."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Every knob of the bot; field names map to upper-case environment variables."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Secrets: SecretStr keeps them out of repr() and logs.
    discord_token: SecretStr | None = None
    runcomfy_api_token: SecretStr | None = None

    # RunComfy
    runcomfy_base_url: str = "https://model-api.runcomfy.net"
    runcomfy_model: str = DEFAULT_MODEL
    runcomfy_requests_per_second: float = Field(default=10.0, gt=0)
    runcomfy_http_timeout_seconds: float = Field(default=30.0, gt=0)
    runcomfy_max_retries: int = Field(default=4, ge=0)
    download_max_bytes: int = Field(default=40 * MIB, gt=0)
    download_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["*.runcomfy.net"])

    # Job manager
    job_timeout_seconds: float = Field(default=900.0, gt=0)
    poll_min_interval_seconds: float = Field(default=0.25, gt=0)
    poll_max_interval_seconds: float = Field(default=10.0, gt=0)
    unknown_state_timeout_seconds: float = Field(default=120.0, gt=0)

    # Storage
    database_path: Path = Path("data/imagine.sqlite3")

    # Discord
    discord_guild_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)
    discord_api_base_url: str = "https://discord.com/api/v10"
    discord_gateway_url: str = "wss://gateway.discord.gg/"

    log_level: str = "INFO"

    _split_lists = field_validator("download_allowed_hosts", "discord_guild_ids", mode="before")(_split_csv)

    @field_validator("log_level")
    @classmethod
    def _upper_level(cls, value: str) -> str:
        return value.upper()

    def require(self, name: str) -> SecretStr:
        """The secret `name` (e.g. "RUNCOMFY_API_TOKEN"), or MissingSettingError if it is unset or blank."""
        value: SecretStr | None = getattr(self, name.lower())
        if value is None or not value.get_secret_value().strip():
            raise MissingSettingError(name)
        return value

    @property
    def allowed_download_hosts(self) -> list[str]:
        """The download allowlist plus the API's own host (an emulator or proxy serves its files there)."""
        host = urlsplit(self.runcomfy_base_url).hostname
        hosts = list(self.download_allowed_hosts)
        if host and host not in hosts:
            hosts.append(host)
        return hosts
