from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import discord

from bot.jobs.limits import Limit, LimitReachedError
from bot.model_spec import NO_SEED
from cogs import render
from cogs.buttons import image_number, parse_custom_id
from storage.models import Job, JobOrigin, JobState

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make_job(prompt: str = "a red fox, watercolor", **changes: Any) -> Job:
    job = Job(
        id=42,
        model="imagineart/imagineart-1.5-preview/text-to-image",
        prompt=prompt,
        aspect_ratio="16:9",
        seed=7,
        state=JobState.IN_QUEUE,
        origin=JobOrigin(guild_id=1, channel_id=2, user_id=3, message_id=4),
        created_at=T0,
        updated_at=T0,
    )
    return replace(job, **changes)


def custom_ids(rendered: render.Rendered) -> list[str]:
    return [button.custom_id for button in rendered.buttons]


def card(rendered: render.Rendered) -> discord.Embed:
    """The rendering's embed: every rendering these tests read one from has it."""
    assert rendered.embed is not None
    return rendered.embed


def labels(rendered: render.Rendered) -> list[str | None]:
    return [button.item.label for button in rendered.buttons]


def test_queued_shows_position_and_a_cancel_button() -> None:
    rendered = render.queued(make_job(), 3)
    assert "Queued · #3" in rendered.content
    assert "<@3>" in rendered.content
    assert custom_ids(rendered) == ["imagine:cancel:42"]
    fields = {field.name: field.value for field in card(rendered).fields}
    assert fields["Seed"] == "`7`"
    assert fields["Aspect ratio"] == "16:9 · landscape"


def test_generating_uses_relative_timestamps() -> None:
    job = make_job(state=JobState.IN_PROGRESS, started_at=T0)
    rendered = render.generating(job, T0 + timedelta(seconds=8))
    assert f"<t:{int(T0.timestamp())}:R>" in rendered.content
    assert f"<t:{int(T0.timestamp()) + 8}:R>" in rendered.content
    assert not rendered.buttons  # a running job can no longer be cancelled


def test_finished_embeds_the_attachment_and_offers_reroll_remix_and_delete() -> None:
    job = make_job(state=JobState.COMPLETED, completed_at=T0 + timedelta(seconds=9.4), cost_usd=0.03)
    rendered = render.finished(job, ["imagine-42.png"], model_name="ImagineArt 1.5")
    assert card(rendered).image.url == "attachment://imagine-42.png"
    fields = {field.name: field.value for field in card(rendered).fields}
    assert fields["Time"] == "9.4 s"
    assert fields["Model"] == "ImagineArt 1.5"
    assert "Cost" not in fields  # only when the server asks for it
    assert custom_ids(rendered) == ["imagine:reroll:42", "imagine:remix:42", "imagine:delete:42", "imagine:edit:42:1"]
    assert labels(rendered) == ["Reroll", "Remix", "Delete", "Edit"]  # one image: no number to tell it apart


def test_finished_shows_cost_when_asked_and_marks_estimates() -> None:
    job = make_job(state=JobState.COMPLETED, completed_at=T0, cost_usd=0.03)
    exact = render.finished(job, ["imagine-42.png"], model_name="m", show_cost=True)
    estimate = render.finished(replace(job, cost_estimated=True), ["imagine-42.png"], model_name="m", show_cost=True)
    assert {f.name: f.value for f in card(exact).fields}["Cost"] == "$0.03"
    assert {f.name: f.value for f in card(estimate).fields}["Cost"] == "≈ $0.03"


def test_waiting_for_a_slot_shows_the_place_in_line_and_can_be_cancelled() -> None:
    rendered = render.waiting_for_slot(make_job(state=JobState.WAITING), 2)
    assert "waiting for a free slot · #2" in rendered.content.lower()
    assert custom_ids(rendered) == ["imagine:cancel:42"]


def test_a_content_refusal_does_not_repeat_the_prompt() -> None:
    job = make_job(prompt="something the filter hated")
    rendered = render.refused(job, "The image service refused this prompt under its content rules.")
    shown = rendered.content + str(card(rendered).to_dict())
    assert "filter hated" not in shown
    assert "content rules" in shown
    assert "Failed" in rendered.content


def test_markdown_in_prompts_is_escaped_and_long_prompts_trimmed() -> None:
    prompt = "```\n**bold** " + "x" * 5000
    job = make_job(prompt=prompt)
    rendered = render.queued(job, None)
    assert len(rendered.content) <= render.CONTENT_MAX
    assert "```" not in rendered.content
    description = card(rendered).description
    assert description is not None
    assert len(description) <= render.DESCRIPTION_MAX
    assert description.endswith("…")
    assert "\\*\\*bold\\*\\*" in description
    assert len(render.alt_text(job)) <= render.ALT_TEXT_MAX


def test_total_embed_size_stays_within_discord_limit() -> None:
    job = make_job(prompt="y" * 2048, state=JobState.COMPLETED, completed_at=T0)
    rendered = render.finished(job, ["imagine-42.png"], model_name="m" * 200)
    assert len(card(rendered)) <= 6000


def test_failure_says_what_happened_and_offers_retry_only_when_useful() -> None:
    retry = render.failed(make_job(), "RunComfy had a hiccup.", retryable=True)
    final = render.failed(make_job(), "The server's RunComfy balance is empty.", retryable=False)
    advice = card(retry).fields[-1].value
    assert advice is not None
    assert "Press 🔄" in advice
    assert custom_ids(retry) == ["imagine:reroll:42"]
    assert not final.buttons


async def test_views_are_fresh_and_persistent() -> None:
    rendered = render.queued(make_job(), 1)
    first, second = rendered.view(), rendered.view()
    assert first is not second
    assert first.timeout is None
    assert first.is_persistent()


def test_custom_id_parsing_refuses_forgeries() -> None:
    assert parse_custom_id("imagine:reroll:42") == ("reroll", 42)
    assert parse_custom_id("imagine:reroll:../../x") == ("reroll", None)
    assert parse_custom_id("imagine:reroll:-1") == ("reroll", None)
    assert parse_custom_id("imagine:reroll:١٢") == ("reroll", None)  # Arabic-Indic digits pass isdigit()
    assert parse_custom_id("imagine:cancel:99999999999999999999999") == ("cancel", None)


def test_a_gallery_shows_every_image_with_buttons_per_image() -> None:
    job = make_job(state=JobState.COMPLETED, completed_at=T0, count=4, seed=NO_SEED, input_url="https://cdn/x.png")
    names = [render.file_name(job, "png", number, 4) for number in range(1, 5)]
    assert names[1] == "imagine-42-2.png"
    rendered = render.finished(job, names, model_name="Nano Banana 2 Edit")
    assert card(rendered).image.url is None  # the attachments themselves make the gallery
    fields = {field.name: field.value for field in card(rendered).fields}
    assert "Seed" not in fields  # the model takes none
    assert fields["Images"] == "4"
    ids = custom_ids(rendered)
    assert ids[:3] == ["imagine:reroll:42", "imagine:remix:42", "imagine:delete:42"]
    assert ids[3:7] == [f"imagine:alone:42:{n}" for n in range(1, 5)]
    assert ids[7:] == [f"imagine:edit:42:{n}" for n in range(1, 5)]
    rows = [item.item.row for item in rendered.buttons]
    assert rows == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert labels(rendered)[3:] == [f"Image {n}" for n in range(1, 5)] + [f"Edit {n}" for n in range(1, 5)]
    assert labels(render.alone(job, 2, names[1], model_name="Nano Banana 2 Edit")) == ["Edit"]
    alt = render.alt_text(job, 2, 4)
    assert alt.startswith("Image 2 of 4: An edit of the member's image: ")


def test_custom_ids_of_per_image_buttons_parse_back() -> None:
    assert parse_custom_id("imagine:edit:42:3") == ("edit", 42)
    assert image_number("imagine:edit:42:3") == 3
    assert image_number("imagine:reroll:42") is None
    assert image_number("imagine:edit:42:x") is None


def test_an_operators_cap_says_what_is_left_when_only_a_smaller_job_would_fit() -> None:
    month = LimitReachedError(Limit.BOT_MONTH_USD, used=9.80, allowed=10.0, frees_at=T0, asked=4, cost=0.28)
    said = render.limit_refusal(month)
    assert "about $0.28" in said
    assert "$0.20 left of its operator's budget for this month ($10.00)" in said
    assert "fewer images or a cheaper model" in said
    spent = LimitReachedError(Limit.BOT_DAY_USD, used=0.30, allowed=0.30, frees_at=T0, cost=0.03)
    assert render.limit_refusal(spent).startswith("This bot has used its operator's daily budget ($0.30)")
    images = LimitReachedError(Limit.BOT_IMAGES, used=3, allowed=3, frees_at=T0, asked=2)
    assert render.limit_refusal(images).startswith("This bot has made all 3 images its operator allows per day")
