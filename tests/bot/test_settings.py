"""Settings: the README table and .env.example never drift from the class; shards and empty values parse."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from bot import settings_doc
from bot.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def build(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


def test_every_setting_has_a_one_line_description() -> None:
    for name, field in settings_doc.fields():
        assert field.description, f"{name} needs a description= (it becomes its README and .env.example line)"
        assert "\n" not in field.description, name
        assert "|" not in field.description, name


def test_readme_settings_table_matches_the_settings_class() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert settings_doc.render_table() in readme, "README.md is stale: run `python -m bot.settings_doc`"
    section = readme.split("## Settings", 1)[1].split("\n## ", 1)[0]
    listed = {line.split("`")[1] for line in section.splitlines() if line.startswith("| `")}
    assert listed == {name for name, _ in settings_doc.fields()}


def test_env_example_lists_every_setting_with_a_comment() -> None:
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    assert text == settings_doc.render_env_example(), ".env.example is stale: run `python -m bot.settings_doc`"
    lines = text.splitlines()
    for name, _ in settings_doc.fields():
        [index] = [i for i, line in enumerate(lines) if line.lstrip("# ").startswith(f"{name}=")]
        assert lines[index - 1].startswith("# "), f"{name} has no comment line"


def test_env_example_parses_to_the_defaults(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text((ROOT / ".env.example").read_text(encoding="utf-8"), encoding="utf-8")
    loaded = Settings(_env_file=env)
    assert loaded.model_dump() == build().model_dump()


def test_empty_values_mean_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HEALTH_PORT", "SHARD_COUNT", "SHARD_IDS", "DISCORD_TOKEN", "DISCORD_GUILD_IDS"):
        monkeypatch.setenv(name, "")
    loaded = build()
    assert loaded.health_port is None
    assert loaded.shard_count is None
    assert loaded.discord_token is None
    assert loaded.discord_guild_ids == []


def test_environment_values_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHARD_COUNT", "4")
    monkeypatch.setenv("SHARD_IDS", "1, 3")
    monkeypatch.setenv("LOG_FORMAT", "JSON")
    monkeypatch.setenv("HEALTH_PORT", "8080")
    loaded = build()
    assert (loaded.shard_count, loaded.shard_ids, loaded.owned_shards) == (4, [1, 3], [1, 3])
    assert loaded.log_format == "json"
    assert loaded.health_port == 8080
    assert loaded.health_host == "127.0.0.1"


def test_shard_count_alone_runs_every_shard() -> None:
    assert build(shard_count=3).owned_shards == [0, 1, 2]
    assert build().owned_shards is None


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"shard_ids": [0]}, "SHARD_IDS needs SHARD_COUNT"),
        ({"shard_count": 2, "shard_ids": [2]}, "outside 0..1"),
        ({"shard_count": 2, "shard_ids": [1, 1]}, "twice"),
        ({"shard_count": 0}, "greater than or equal to 1"),
        ({"log_format": "xml"}, "'text' or 'json'"),
    ],
)
def test_bad_shard_and_log_settings_are_refused(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        build(**values)


def test_secrets_lists_only_tokens_that_are_set() -> None:
    assert build().secrets() == []
    assert sorted(build(discord_token="d-token", runcomfy_api_token="r-token").secrets()) == ["d-token", "r-token"]
    assert "d-token" not in repr(build(discord_token="d-token"))


def test_public_bot_settings_parse_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_ALLOWED_GUILD_IDS", "123456789012345678, 876543210987654321")
    monkeypatch.setenv("BUDGET_IMAGES_PER_DAY", "0")
    monkeypatch.setenv("BUDGET_USD_PER_DAY", "2.5")
    monkeypatch.setenv("BUDGET_USD_PER_MONTH", "0")
    monkeypatch.setenv("JOB_RETENTION_DAYS", "30")
    monkeypatch.setenv("RUNCOMFY_BALANCE_PROBE_SECONDS", "60")
    monkeypatch.setenv("IMAGE_WORKERS", "3")
    monkeypatch.setenv("IMAGE_MAX_PIXELS", "20000000")
    loaded = build()
    assert loaded.discord_allowed_guild_ids == [123456789012345678, 876543210987654321]
    assert (loaded.budget_images_per_day, loaded.budget_usd_per_day, loaded.budget_usd_per_month) == (0, 2.5, 0)
    assert loaded.has_budget
    assert (loaded.job_retention_days, loaded.runcomfy_balance_probe_seconds) == (30, 60.0)
    assert (loaded.image_workers, loaded.image_max_pixels) == (3, 20_000_000)


def test_public_bot_defaults_cap_spending_and_serve_any_server() -> None:
    loaded = build()
    assert loaded.discord_allowed_guild_ids == []
    assert (loaded.budget_images_per_day, loaded.budget_usd_per_day, loaded.budget_usd_per_month) == (200, 10.0, 100.0)
    assert loaded.has_budget
    assert not build(budget_images_per_day=0, budget_usd_per_day=0, budget_usd_per_month=0).has_budget
    assert (loaded.job_retention_days, loaded.image_workers) == (90, 2)


@pytest.mark.parametrize(
    ("values", "name"),
    [
        ({"discord_allowed_guild_ids": "12, abc"}, "discord_allowed_guild_ids"),
        ({"discord_allowed_guild_ids": "0"}, "discord_allowed_guild_ids"),
        ({"discord_allowed_guild_ids": "-5"}, "discord_allowed_guild_ids"),
        ({"budget_images_per_day": -1}, "budget_images_per_day"),
        ({"budget_usd_per_day": -0.01}, "budget_usd_per_day"),
        ({"budget_usd_per_month": "inf"}, "budget_usd_per_month"),
        ({"budget_usd_per_day": "nan"}, "budget_usd_per_day"),
        ({"job_retention_days": -1}, "job_retention_days"),
        ({"runcomfy_balance_probe_seconds": 0}, "runcomfy_balance_probe_seconds"),
        ({"image_workers": 0}, "image_workers"),
        ({"image_max_pixels": 1000}, "image_max_pixels"),
    ],
)
def test_bad_public_bot_settings_are_refused_by_name(values: dict[str, object], name: str) -> None:
    with pytest.raises(ValidationError, match=name):
        build(**values)
