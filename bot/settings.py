"""All configuration, read once from the environment and `.env`.

This is the only module that looks at the environment: everything else takes a
`Settings` (or the few values it needs) as an argument, so tests build one with
keyword overrides and nothing leaks between them.

Every field carries a one-line `description`: the README's settings table and
`.env.example` are generated from them (`python -m bot.settings_doc`), and a
test fails when either drifts from this class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from storage.postgres.connect import check_url, passwords

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


# A Discord id: a positive 64-bit integer (a typo like "-1" or "0" would otherwise silently match nothing).
Snowflake = Annotated[int, Field(gt=0, lt=2**63)]


def _split_csv(value: object) -> object:
    """Accept `1,2,3` from the environment as well as a list from code."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Every knob of the bot; field names map to upper-case environment variables."""

    # env_ignore_empty: `HEALTH_PORT=` in a copied .env means "unset", not "invalid integer".
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True)

    # Secrets: SecretStr keeps them out of repr() and logs.
    discord_token: SecretStr | None = Field(
        default=None, description="the bot's token (Developer Portal → Bot → Reset Token); needed by run, sync, check"
    )
    runcomfy_api_token: SecretStr | None = Field(
        default=None, description="RunComfy API key; needed by run, check, and generate without --emulator"
    )

    # RunComfy
    runcomfy_base_url: str = Field(
        default="https://model-api.runcomfy.net", description="the Model API (or an emulator)"
    )
    runcomfy_model: str = Field(
        default=DEFAULT_MODEL, description="the default model: a text-to-image model of the registry (docs/models.md)"
    )
    runcomfy_models_file: Path | None = Field(
        default=None, description="a TOML file of models to add to (or replace in) the vetted set; see docs/models.md"
    )
    runcomfy_requests_per_second: float = Field(
        default=10.0, gt=0, description="one budget for every RunComfy request: submits, polls, downloads"
    )
    runcomfy_http_timeout_seconds: float = Field(default=30.0, gt=0, description="per RunComfy request")
    runcomfy_max_retries: int = Field(
        default=4, ge=0, description="retries of status/result/cancel calls (a submit is never retried)"
    )
    download_max_bytes: int = Field(default=40 * MIB, gt=0, description="largest result file accepted (40 MiB)")
    download_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["*.runcomfy.net"],
        description="comma-separated hosts result files may come from (the API's own host is added)",
    )
    runcomfy_balance_probe_seconds: float = Field(
        default=300.0,
        gt=0,
        allow_inf_nan=False,
        description="after RunComfy says the balance is exhausted, how often to try one job again",
    )

    # Spending: the whole bot across every server, per UTC day and UTC month.
    budget_images_per_day: int = Field(
        default=200, ge=0, description="images the whole bot may make per UTC day, all servers together; 0: no limit"
    )
    budget_usd_per_day: float = Field(
        default=10.0,
        ge=0,
        allow_inf_nan=False,
        description="US dollars the whole bot may spend per UTC day; 0: no limit",
    )
    budget_usd_per_month: float = Field(
        default=100.0,
        ge=0,
        allow_inf_nan=False,
        description="US dollars the whole bot may spend per UTC calendar month; 0: no limit",
    )

    # Images: decoding and re-encoding run on a few threads of their own, so memory has a ceiling.
    image_workers: int = Field(
        default=2, ge=1, le=64, description="images decoded or re-encoded at once (each may hold IMAGE_MAX_PIXELS)"
    )
    image_max_pixels: int = Field(
        default=40_000_000,
        ge=1_000_000,
        description="largest result accepted, in pixels (width × height); ImagineArt renders about 4 million",
    )

    # Job manager
    job_timeout_seconds: float = Field(
        default=900.0,
        gt=0,
        description="a job not done this long after it was sent (or waiting this long in its server's line) is "
        "cancelled or given up, after one last look; a finished image is always delivered",
    )
    poll_min_interval_seconds: float = Field(default=0.25, gt=0, description="shortest wait between two polls of a job")
    poll_max_interval_seconds: float = Field(default=10.0, gt=0, description="longest wait between two polls of a job")
    unknown_state_timeout_seconds: float = Field(
        default=120.0, gt=0, description="how long an undocumented job state is tolerated"
    )
    delivery_retry_hours: float = Field(
        default=24.0,
        gt=0,
        description="how long a finished image (or a failure notice) is retried while Discord cannot take it",
    )

    # Storage
    database_path: Path = Field(
        default=Path("data/imagine.sqlite3"), description="the SQLite file (its folder is created on start)"
    )
    job_retention_days: int = Field(
        default=90, ge=0, description="finished jobs older than this are deleted, their usage totals kept; 0: keep all"
    )
    database_url: SecretStr | None = Field(
        default=None,
        description="postgresql://user:password@host/db to share jobs between processes; unset: the SQLite file",
    )
    lease_seconds: float = Field(
        default=30.0,
        ge=3,
        le=600,
        description="with DATABASE_URL: a process silent this long loses its jobs and shards to the others",
    )

    # Discord
    discord_guild_ids: Annotated[list[int], NoDecode] = Field(
        default_factory=list, description="comma-separated server ids to sync commands to on start (development)"
    )
    discord_allowed_guild_ids: Annotated[list[Snowflake], NoDecode] = Field(
        default_factory=list, description="comma-separated server ids the bot serves; empty: any server that adds it"
    )
    discord_api_base_url: str = Field(
        default="https://discord.com/api/v10", description="Discord's REST base (tests point it at a fake)"
    )
    discord_gateway_url: str = Field(
        default="wss://gateway.discord.gg/", description="Discord's gateway (tests point it at a fake)"
    )
    shard_count: int | None = Field(
        default=None, ge=1, description="total shards across all processes; unset runs one unsharded connection"
    )
    shard_ids: Annotated[list[int] | None, NoDecode] = Field(
        default=None, description="comma-separated shards this process runs (needs SHARD_COUNT); unset: all of them"
    )

    # Operating it
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR")
    log_format: Literal["text", "json"] = Field(
        default="text", description="text: human-readable lines; json: one JSON object per line"
    )
    health_port: int | None = Field(
        default=None, ge=0, le=65535, description="serve /healthz and /metrics on this port; unset: off"
    )
    health_host: str = Field(
        default="127.0.0.1", description="address of the health endpoint (0.0.0.0 to let Prometheus in)"
    )
    shutdown_timeout_seconds: float = Field(
        default=8.0, gt=0, le=60, description="on SIGTERM/SIGINT, finish in-flight work for at most this long"
    )

    _split_lists = field_validator(
        "download_allowed_hosts", "discord_guild_ids", "discord_allowed_guild_ids", "shard_ids", mode="before"
    )(_split_csv)

    @field_validator("log_level")
    @classmethod
    def _upper_level(cls, value: str) -> str:
        return value.upper()

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower_format(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_url(value.get_secret_value())  # the error names the URL without its password
        return value

    @model_validator(mode="after")
    def _check_shards(self) -> Self:
        if self.shard_ids is None:
            return self
        if self.shard_count is None:
            raise ValueError("SHARD_IDS needs SHARD_COUNT (the total number of shards across all processes)")
        if not self.shard_ids:
            raise ValueError("SHARD_IDS is empty; leave it unset to run every shard")
        wrong = [shard for shard in self.shard_ids if not 0 <= shard < self.shard_count]
        if wrong:
            last = self.shard_count - 1
            raise ValueError(f"SHARD_IDS {wrong} are outside 0..{last} (SHARD_COUNT={self.shard_count})")
        if len(set(self.shard_ids)) != len(self.shard_ids):
            raise ValueError("SHARD_IDS lists a shard twice")
        return self

    def require(self, name: str) -> SecretStr:
        """The secret `name` (e.g. "RUNCOMFY_API_TOKEN"), or MissingSettingError if it is unset or blank."""
        value: SecretStr | None = getattr(self, name.lower())
        if value is None or not value.get_secret_value().strip():
            raise MissingSettingError(name)
        return value

    def secrets(self) -> list[str]:
        """The secret values that are set: what log and output redaction must never let through (the database
        URL's password too, in every spelling)."""
        values = (self.discord_token, self.runcomfy_api_token)
        found = [value.get_secret_value() for value in values if value is not None and value.get_secret_value()]
        if self.database_url is not None:
            found.extend(passwords(self.database_url.get_secret_value()))
        return found

    @property
    def postgres_url(self) -> str | None:
        """DATABASE_URL's text, to connect with (it may hold a password: pass it on, never print it)."""
        return self.database_url.get_secret_value() if self.database_url is not None else None

    @property
    def sharded(self) -> bool:
        return self.shard_count is not None

    @property
    def owned_shards(self) -> list[int] | None:
        """The shards this process runs; None when unsharded."""
        if self.shard_count is None:
            return None
        return list(self.shard_ids) if self.shard_ids is not None else list(range(self.shard_count))

    @property
    def has_budget(self) -> bool:
        """Whether any of the three whole-bot spending caps is set (0 means no limit)."""
        return any(cap > 0 for cap in (self.budget_images_per_day, self.budget_usd_per_day, self.budget_usd_per_month))

    @property
    def allowed_download_hosts(self) -> list[str]:
        """The download allowlist plus the API's own host (an emulator or proxy serves its files there)."""
        host = urlsplit(self.runcomfy_base_url).hostname
        hosts = list(self.download_allowed_hosts)
        if host and host not in hosts:
            hosts.append(host)
        return hosts
