"""What the member and admin commands print, and the ✉️ details DM: pure functions to embeds.

Like `cogs/render.py`: no I/O, so every report is checked without Discord.
All of these are sent ephemerally or by DM, with mentions switched off.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime

import discord

from bot.jobs import BudgetState
from bot.model_spec import NO_SEED
from cogs.render import COLOUR_DONE, COLOUR_WORKING, RATIO_NAMES, facts, money, safe_prompt, trim
from storage.models import GuildSettings, Job, JobState, Usage

FIELD_MAX = 1024
DESCRIPTION_MAX = 4096
LINE_PROMPT_MAX = 60
BASE_URL = "https://discord.com/channels"


def jump_url(job: Job) -> str | None:
    origin = job.origin
    if not (origin.guild_id and origin.channel_id and origin.message_id):
        return None
    return f"{BASE_URL}/{origin.guild_id}/{origin.channel_id}/{origin.message_id}"


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{math.floor(seconds / 60)} min {round(seconds % 60)} s"


def _between(start: datetime | None, end: datetime | None) -> str | None:
    if start is None or end is None or end < start:
        return None
    return duration((end - start).total_seconds())


def _lines(lines: list[str], limit: int) -> str:
    """As many whole lines as fit in `limit`, with a note when some were left out."""
    kept: list[str] = []
    used = 0
    for index, line in enumerate(lines):
        more = f"… and {len(lines) - index} more"
        if used + len(line) + 1 + len(more) > limit and index < len(lines) - 1:
            kept.append(more)
            break
        kept.append(line)
        used += len(line) + 1
    return "\n".join(kept)


def details(job: Job, *, model_name: str, show_cost: bool) -> discord.Embed:
    """The ✉️ DM: everything needed to make the image again, and where the time went."""
    embed = discord.Embed(
        title=f"Image details · job {job.id}", description=safe_prompt(job.prompt, DESCRIPTION_MAX), colour=COLOUR_DONE
    )
    if job.seed != NO_SEED:
        embed.add_field(name="Seed", value=f"`{job.seed}`")
    if job.aspect_ratio:
        embed.add_field(name="Aspect ratio", value=RATIO_NAMES.get(job.aspect_ratio, job.aspect_ratio))
    embed.add_field(name="Model", value=model_name)
    if job.count > 1:
        embed.add_field(name="Images", value=str(job.count))
    if job.input_url:
        embed.add_field(name="Edited from", value="the picture attached to this message", inline=False)
    embed.add_field(name="Request id", value=f"`{job.request_id}`" if job.request_id else "none", inline=False)
    timings = [
        ("Asked", discord.utils.format_dt(job.created_at, "f")),
        ("Before RunComfy accepted it", _between(job.created_at, job.queued_at)),
        ("In RunComfy's queue", _between(job.queued_at, job.started_at)),
        ("Generating", _between(job.started_at, job.completed_at)),
        ("Total", _between(job.created_at, job.finished_at or job.completed_at)),
    ]
    embed.add_field(
        name="Timings", value="\n".join(f"{name}: {value}" for name, value in timings if value), inline=False
    )
    if show_cost and job.cost_usd is not None:
        embed.add_field(name="Cost", value=money(job.cost_usd, estimated=job.cost_estimated))
    link = jump_url(job)
    if link and job.deleted_at is None:
        embed.add_field(name="Message", value=f"[Open in the channel]({link})")
    return embed


def _state(job: Job, position: int | None) -> str:
    if job.state is JobState.WAITING:
        return f"waiting for a free slot · #{position}" if position else "waiting for a free slot"
    if job.state is JobState.IN_QUEUE:
        return f"queued at the image service · #{job.queue_position}" if job.queue_position else "queued"
    return {
        JobState.SUBMITTING: "sending",
        JobState.IN_PROGRESS: "generating",
        JobState.COMPLETED: "finishing",
        JobState.DELIVERING: "being posted",
    }.get(job.state, job.state.value)


def _job_line(job: Job, status: str) -> str:
    link = jump_url(job)
    where = f" · [message]({link})" if link and job.deleted_at is None else ""
    return f"**#{job.id}** · {status} · {safe_prompt(job.prompt, LINE_PROMPT_MAX, one_line=True)}{where}"


def queue(
    settings: GuildSettings,
    *,
    mine: list[Job],
    positions: dict[int, int],
    running: int,
    waiting: int,
    quota_used: int,
    quota_frees_at: datetime | None,
    unlimited: bool,
) -> discord.Embed:
    """`/imagine-queue`: the member's jobs with state and place, and the server's totals."""
    lines = [_job_line(job, _state(job, positions.get(job.id))) for job in mine]
    embed = discord.Embed(
        title="Your images in progress here",
        description=_lines(lines, DESCRIPTION_MAX) if lines else "Nothing in progress. Start one with `/imagine`.",
        colour=COLOUR_WORKING,
    )
    embed.add_field(
        name="This server",
        value=f"{running} of {settings.guild_concurrent} slots in use · {waiting} waiting for a slot",
        inline=False,
    )
    if unlimited:
        quota = f"{quota_used} images · no limits for you (Manage Server)"
    else:
        quota = (
            f"{quota_used} of {settings.member_daily} images · up to {settings.member_concurrent} at a time, "
            f"{settings.member_queue} more waiting"
        )
        if quota_used >= settings.member_daily and quota_frees_at is not None:
            quota += f" · the next frees up {discord.utils.format_dt(quota_frees_at, 'R')}"
    embed.add_field(name="You, last 24 hours", value=quota, inline=False)
    return embed


def history(results: list[Job], model_name: Callable[[str], str]) -> discord.Embed:
    """`/imagine-history`: the member's newest results with their seeds, models and where to find them."""
    lines = []
    for job in results:
        link = jump_url(job)
        if job.delivery == "text" and job.images:
            links = " ".join(f"[{number}]({url})" for number, url in enumerate(job.images, start=1))
            where = f"image{'s' if len(job.images) > 1 else ''} {links} (not shown in the channel)"
        else:
            where = "deleted" if job.deleted_at is not None or not link else f"[open]({link})"
        when = f" · {discord.utils.format_dt(job.finished_at, 'R')}" if job.finished_at else ""
        prompt = safe_prompt(job.prompt, LINE_PROMPT_MAX, one_line=True)
        lines.append(f"{facts(job, model_name(job.model))} · {prompt} · {where}{when}")
    return discord.Embed(
        title=f"Your last {len(results)} image{'s' if len(results) != 1 else ''} here" if results else "No images yet",
        description=_lines(lines, DESCRIPTION_MAX) if lines else "Make your first with `/imagine`.",
        colour=COLOUR_DONE,
    )


def _flag(value: bool) -> str:
    return "on" if value else "off"


def settings_card(settings: GuildSettings, *, default_ratio: str) -> discord.Embed:
    """`/imagine-admin show`: every setting, defaults included, as it is in force right now."""
    embed = discord.Embed(title="/imagine settings for this server", colour=COLOUR_WORKING)
    channels = " ".join(f"<#{channel}>" for channel in sorted(settings.allowed_channels)) or "every channel"
    embed.add_field(name="Channels", value=trim(channels, FIELD_MAX), inline=False)
    ratio = settings.default_aspect_ratio or default_ratio
    embed.add_field(name="Default aspect ratio", value=RATIO_NAMES.get(ratio, ratio))
    embed.add_field(name="Jobs at once, per member", value=str(settings.member_concurrent))
    embed.add_field(name="Jobs waiting, per member", value=str(settings.member_queue))
    embed.add_field(name="Images per member per 24 h", value=str(settings.member_daily))
    embed.add_field(name="Jobs at once, whole server", value=f"{settings.guild_concurrent} (more wait in line)")
    embed.add_field(name="Manage Server skips member limits", value=_flag(settings.admins_bypass))
    embed.add_field(name="🔄 reaction rerolls", value=_flag(settings.reaction_reroll))
    embed.add_field(name="Results show cost", value=_flag(settings.show_cost))
    terms = ", ".join(f"||{discord.utils.escape_markdown(term)}||" for term in settings.banned_terms)
    embed.add_field(
        name=f"Banned words and phrases ({len(settings.banned_terms)})",
        value=trim(terms or "none", FIELD_MAX),
        inline=False,
    )
    if settings.updated_at is not None:
        who = f" by <@{settings.updated_by}>" if settings.updated_by else ""
        embed.add_field(name="Last change", value=f"{discord.utils.format_dt(settings.updated_at, 'R')}{who}")
    embed.set_footer(text="Change any of these with /imagine-admin set.")
    return embed


def usage(report: Usage, *, days: int, base_price: float | None, budget: BudgetState | None = None) -> discord.Embed:
    """`/imagine-admin usage`: images and spend per day, the total, and the members who made the most; and
    where the whole bot stands against its operator's budget (all servers together), when there is one.

    A job with no cost at all is priced at the model's base price when known;
    every figure with an estimate in it is marked "≈".
    """

    def spend(cost: float, estimated: int, unpriced: int) -> str:
        if unpriced and base_price is not None:
            return money(cost + unpriced * base_price, estimated=True)
        text = money(cost, estimated=bool(estimated))
        return f"{text} (+{unpriced} unpriced)" if unpriced else text

    lines = [
        f"`{day.day}` · {day.images} image{'s' if day.images != 1 else ''} · "
        f"{spend(day.cost_usd, day.estimated, day.unpriced)}"
        for day in report.days
    ]
    embed = discord.Embed(
        title=f"Usage · last {days} day{'s' if days != 1 else ''}",
        description=_lines(lines, DESCRIPTION_MAX) if lines else "No images in that time.",
        colour=COLOUR_DONE,
    )
    embed.add_field(
        name="Total", value=f"{report.images} images · {spend(report.cost_usd, report.estimated, report.unpriced)}"
    )
    if report.members:
        members = [
            f"{place}. <@{member.user_id}> · {member.images} image{'s' if member.images != 1 else ''} · "
            f"{spend(member.cost_usd, member.estimated, member.unpriced)}"
            for place, member in enumerate(report.members, start=1)
        ]
        embed.add_field(name="Top members", value=_lines(members, FIELD_MAX), inline=False)
    if budget is not None:
        embed.add_field(name="The whole bot (every server)", value=budget_lines(budget), inline=False)
    if report.estimated or report.unpriced:
        embed.set_footer(text="≈ includes estimates from the model's base price where RunComfy gave no cost.")
    return embed


def budget_lines(state: BudgetState) -> str:
    """The operator's caps and how much of each is used; a reached one says when it resets."""
    budget, lines = state.budget, []
    if budget.images_per_day:
        lines.append(f"today: {state.today.images} of {budget.images_per_day} images")
    if budget.usd_per_day:
        lines.append(f"today: {money(state.spent_today, estimated=True)} of {money(budget.usd_per_day)}")
    if budget.usd_per_month:
        lines.append(f"this month: {money(state.spent_this_month, estimated=True)} of {money(budget.usd_per_month)}")
    refusal = state.refusal()
    if refusal is not None and refusal.frees_at is not None:
        lines.append(f"**reached**: no new images until {discord.utils.format_dt(refusal.frees_at, 'R')}")
    return "\n".join(lines) + "\n-# Set by the bot's operator; a server's own settings cannot raise it."
