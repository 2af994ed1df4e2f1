from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.model_spec import NO_SEED, InvalidInputError
from cogs import reports
from cogs.render import money
from cogs.results import _inputs, parse_remix
from storage.models import GuildSettings, Job, JobOrigin, JobState, MemberUsage, Usage, UsageDay

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def delivered(**changes: Any) -> Job:
    job = Job(
        id=42,
        model="m",
        prompt="a *bold* fox",
        aspect_ratio="16:9",
        seed=7,
        state=JobState.DELIVERED,
        origin=JobOrigin(guild_id=1, channel_id=2, user_id=3, message_id=4),
        created_at=T0,
        updated_at=T0,
        request_id="req-1",
        queued_at=T0 + timedelta(seconds=1),
        started_at=T0 + timedelta(seconds=3),
        completed_at=T0 + timedelta(seconds=11),
        finished_at=T0 + timedelta(seconds=12),
        cost_usd=0.03,
    )
    return replace(job, **changes)


def fields(embed: object) -> dict[str, str]:
    return {field.name: field.value for field in embed.fields}  # type: ignore[attr-defined]


def test_details_say_how_to_make_it_again_and_where_the_time_went() -> None:
    embed = reports.details(delivered(), model_name="ImagineArt 1.5", show_cost=False)
    shown = fields(embed)
    assert embed.description == "a \\*bold\\* fox"
    assert shown["Seed"] == "`7`"
    assert shown["Request id"] == "`req-1`"
    assert "In RunComfy's queue: 2.0 s" in shown["Timings"]
    assert "Generating: 8.0 s" in shown["Timings"]
    assert "Total: 12.0 s" in shown["Timings"]
    assert "Cost" not in shown
    assert shown["Message"] == "[Open in the channel](https://discord.com/channels/1/2/4)"
    estimated = reports.details(delivered(cost_estimated=True), model_name="m", show_cost=True)
    assert fields(estimated)["Cost"] == "≈ $0.03"
    gone = reports.details(delivered(deleted_at=T0), model_name="m", show_cost=False)
    assert "Message" not in fields(gone)


def test_money_keeps_small_prices_readable() -> None:
    assert money(0.03) == "$0.03"
    assert money(0.0125) == "$0.0125"
    assert money(1234.5) == "$1,234.50"
    assert money(0.03, estimated=True) == "≈ $0.03"


def test_usage_prices_unpriced_images_only_when_the_base_price_is_known() -> None:
    report = Usage(
        days=(UsageDay("2026-01-01", 2, 0.03, 0, 1),),
        members=(MemberUsage(3, 2, 0.03, 0, 1),),
    )
    priced = reports.usage(report, days=7, base_price=0.03)
    assert fields(priced)["Total"] == "2 images · ≈ $0.06"
    unknown = reports.usage(report, days=7, base_price=None)
    assert fields(unknown)["Total"] == "2 images · $0.03 (+1 unpriced)"
    empty = reports.usage(Usage(days=(), members=()), days=1, base_price=None)
    assert empty.description == "No images in that time."
    assert empty.title == "Usage · last 1 day"


def test_long_lists_stay_inside_discords_limits() -> None:
    jobs = [delivered(id=index, prompt="p" * 500, finished_at=T0) for index in range(200)]
    embed = reports.history(jobs, str)
    assert embed.description is not None
    assert len(embed.description) <= 4096
    assert embed.description.endswith("more")
    settings = GuildSettings(guild_id=1, banned_terms=tuple(f"word{index}" * 5 for index in range(200)))
    card = reports.settings_card(settings, default_ratio="1:1")
    assert all(len(field.value) <= 1024 for field in card.fields)  # type: ignore[arg-type]
    assert len(card) <= 6000


def test_remix_form_values_are_read_from_rows_or_labels() -> None:
    rows = [{"type": 1, "components": [{"type": 4, "custom_id": "prompt", "value": "a fox"}]}]
    labels = [{"type": 18, "component": {"type": 4, "custom_id": "seed", "value": "5"}}]
    assert dict(_inputs(rows + labels)) == {"prompt": "a fox", "seed": "5"}


def test_remix_form_parsing() -> None:
    assert parse_remix({"prompt": "a fox", "aspect_ratio": " 16:9 ", "seed": "1,234"}) == ("a fox", "16:9", 1234)
    assert parse_remix({"prompt": "a fox", "aspect_ratio": "", "seed": ""}) == ("a fox", None, None)
    with pytest.raises(InvalidInputError, match="aspect ratio"):
        parse_remix({"prompt": "a fox", "aspect_ratio": "5:4"})
    for seed in ("-1", "1.5", "2147483648", "١٢"):
        with pytest.raises(InvalidInputError, match="seed"):
            parse_remix({"prompt": "a fox", "seed": seed})


def test_details_and_history_cover_every_model_and_image() -> None:
    gallery = delivered(
        count=4,
        seed=NO_SEED,
        input_url="https://cdn/x.png",
        delivery="text",
        result_urls='["https://x/1.png", "https://x/2.png"]',
        model="google/nano-banana-2/edit",
    )
    embed = reports.details(gallery, model_name="Nano Banana 2 Edit", show_cost=False)
    shown = fields(embed)
    assert "Seed" not in shown
    assert (shown["Images"], shown["Model"]) == ("4", "Nano Banana 2 Edit")
    assert "Edited from" in shown
    line = reports.history([gallery], lambda model: model.upper()).description or ""
    assert "GOOGLE/NANO-BANANA-2/EDIT" in line
    assert "[1](https://x/1.png) [2](https://x/2.png)" in line
    assert "4 images" in line
