"""What a member sees for a job at each state: pure functions from a job to message parts.

No I/O and no discord.py client here, so every state can be checked without
Discord. User text (the prompt) is escaped and trimmed to Discord's limits;
the messages are always sent with `allowed_mentions=none`, so a prompt can
show `@everyone` but never ping anyone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import discord

from bot.jobs import Limit, LimitReachedError
from bot.jobs.events import WaitReason
from bot.model_spec import ASPECT_RATIOS, NO_SEED
from cogs.buttons import ImagineButton
from storage.models import FailureKind, Job, JobState

COLOUR_WORKING = discord.Colour.blurple()
COLOUR_DONE = discord.Colour.green()
COLOUR_FAILED = discord.Colour.red()
COLOUR_CANCELLED = discord.Colour.light_grey()

CONTENT_MAX = 2000
TITLE_PROMPT_MAX = 120  # the status line quotes the prompt's start; the embed holds all of it
DESCRIPTION_MAX = 4096
ALT_TEXT_MAX = 1024
RATIO_NAMES = {ratio.value: ratio.choice_name for ratio in ASPECT_RATIOS}
NO_MENTIONS = discord.AllowedMentions.none()
# Embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069), mapped to None: str.translate drops them.
_BIDI_CONTROLS = dict.fromkeys([*range(0x202A, 0x202F), *range(0x2066, 0x206A)])


@dataclass(slots=True)
class Rendered:
    """Everything one message edit carries (no embed where the bot may not post embeds)."""

    content: str
    embed: discord.Embed | None
    buttons: list[ImagineButton] = field(default_factory=list)

    def view(self) -> discord.ui.View:
        """A fresh view (views hold runtime state, so each edit gets its own)."""
        view = discord.ui.View(timeout=None)
        for button in self.buttons:
            view.add_item(button)
        return view


def money(amount: float, *, estimated: bool = False) -> str:
    """`$0.03`, `$0.0125`, or `≈ $0.03` for an estimate."""
    text = f"${amount:,.2f}" if round(amount, 2) == round(amount, 6) else f"${amount:,.4f}"
    return f"≈ {text}" if estimated else text


def trim(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, ending with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def safe_prompt(prompt: str, limit: int, *, one_line: bool = False) -> str:
    """The prompt with markdown escaped (a stray ``` must not swallow the message) and bidi overrides dropped
    (a U+202E must not reverse the bot's own words after it), then trimmed."""
    prompt = prompt.translate(_BIDI_CONTROLS)
    escaped = discord.utils.escape_markdown(" ".join(prompt.split()) if one_line else prompt)
    if len(escaped) > limit:
        escaped = escaped[: limit - 1]
        escaped = escaped.removesuffix("\\") + "…"
    return escaped


def alt_text(job: Job, number: int = 1, total: int = 1) -> str:
    """What a screen reader says for image `number` of `total`: the prompt, and which image of the set it is."""
    prompt = " ".join(job.prompt.split())
    edited = "An edit of the member's image: " if job.input_url else ""
    place = f"Image {number} of {total}: " if total > 1 else ""
    return trim(f"{place}{edited}{prompt}", ALT_TEXT_MAX)


def file_name(job: Job, extension: str, number: int = 1, total: int = 1) -> str:
    """`imagine-<job>.<ext>`, or `imagine-<job>-<n>.<ext>` in a gallery."""
    return f"imagine-{job.id}-{number}.{extension}" if total > 1 else f"imagine-{job.id}.{extension}"


def requester(job: Job) -> str:
    return f"<@{job.origin.user_id}>" if job.origin.user_id else "someone"


def _card(job: Job, colour: discord.Colour) -> discord.Embed:
    embed = discord.Embed(description=safe_prompt(job.prompt, DESCRIPTION_MAX), colour=colour)
    if job.seed != NO_SEED:
        embed.add_field(name="Seed", value=f"`{job.seed}`")
    if job.aspect_ratio:
        embed.add_field(name="Aspect ratio", value=RATIO_NAMES.get(job.aspect_ratio, job.aspect_ratio))
    if job.count > 1:
        embed.add_field(name="Images", value=str(job.count))
    if job.input_url:
        embed.add_field(name="Kind", value="✏️ Edit of an image")
    embed.add_field(name="Requested by", value=requester(job))
    return embed


def facts(job: Job, model_name: str) -> str:
    """The job's settings in one line (seed where the model takes one, ratio, images, model)."""
    parts = [f"seed `{job.seed}`"] if job.seed != NO_SEED else []
    if job.aspect_ratio:
        parts.append(RATIO_NAMES.get(job.aspect_ratio, job.aspect_ratio))
    if job.count > 1:
        parts.append(f"{job.count} images")
    return " · ".join([*parts, model_name])


def result_buttons(job: Job, images: int) -> list[ImagineButton]:
    """🔄 Reroll, 🎛️ Remix and 🗑️ Delete for the job; per image, ✏️ Edit (that image as an edit's input) and, in
    a gallery, 🔍 Image n (that image on its own)."""
    buttons = [ImagineButton(action, job.id, row=0) for action in ("reroll", "remix", "delete")]
    if images == 1:
        return [*buttons, ImagineButton("edit", job.id, 1, row=0, numbered=False)]
    buttons += [ImagineButton("alone", job.id, number, row=1) for number in range(1, images + 1)]
    return buttons + [ImagineButton("edit", job.id, number, row=2) for number in range(1, images + 1)]


def _headline(job: Job, status: str) -> str:
    return trim(
        f"**{safe_prompt(job.prompt, TITLE_PROMPT_MAX, one_line=True)}** · {requester(job)} · {status}", CONTENT_MAX
    )


def queued(job: Job, position: int | None) -> Rendered:
    status = f"⏳ Queued · #{position}" if position else "⏳ Queued"
    embed = _card(job, COLOUR_WORKING)
    return Rendered(_headline(job, status), embed, [ImagineButton("cancel", job.id)])


def starting(job: Job) -> Rendered:
    """Accepted; its place in line or its start follows in a moment (a reroll's first message)."""
    return Rendered(_headline(job, "⏳ Starting…"), _card(job, COLOUR_WORKING), [ImagineButton("cancel", job.id)])


def waiting(job: Job) -> Rendered:
    """Left the line, not yet accepted by RunComfy."""
    return Rendered(_headline(job, "⏳ Sending to the image service…"), _card(job, COLOUR_WORKING))


def waiting_for_slot(job: Job, position: int, reason: WaitReason = WaitReason.SERVER) -> Rendered:
    """In the server's own line: nothing sent or spent yet, so it can always be cancelled."""
    if reason is WaitReason.MEMBER:
        status = f"⏳ Waiting for one of your images to finish · #{position} in line"
    elif reason is WaitReason.CREDIT:
        status = (
            f"⏳ Waiting · #{position}: the image service's account is out of credit. The bot's operator has been "
            "told; this starts by itself when it is back"
        )
    else:
        status = f"⏳ Waiting for a free slot · #{position}"
    return Rendered(_headline(job, status), _card(job, COLOUR_WORKING), [ImagineButton("cancel", job.id)])


def generating(job: Job, eta: datetime | None, *, overdue: bool = False) -> Rendered:
    started = job.started_at or job.updated_at
    status = f"🎨 Generating · started {discord.utils.format_dt(started, 'R')}"
    if overdue:
        status += " · taking longer than usual; it will still arrive here"
    elif eta is not None and eta > started:
        status += f" · ready {discord.utils.format_dt(eta, 'R')}"
    return Rendered(_headline(job, status), _card(job, COLOUR_WORKING))


def finished(
    job: Job, attachments: Sequence[str], *, model_name: str, show_cost: bool = False, embed_links: bool = True
) -> Rendered:
    """The result: the image in the embed (a gallery: every image above it, as Discord lays out several
    attachments), the facts beside it, reroll, remix, delete and the per-image buttons underneath.

    Without Embed Links Discord drops embeds silently, so the facts go into the
    text and the images stay plain attachments.
    """
    took = _took(job)
    buttons = result_buttons(job, len(attachments))
    if not embed_links:
        note = "\n-# I'm missing **Embed Links** in this channel, so the details are plain text."
        return Rendered(trim(_headline(job, f"✅ Done · {facts(job, model_name)}") + note, CONTENT_MAX), None, buttons)
    embed = _card(job, COLOUR_DONE)
    embed.add_field(name="Model", value=model_name)
    if took is not None:
        embed.add_field(name="Time", value=took)
    if show_cost and job.cost_usd is not None:
        embed.add_field(name="Cost", value=money(job.cost_usd, estimated=job.cost_estimated))
    if len(attachments) == 1:
        embed.set_image(url=f"attachment://{attachments[0]}")
    embed.set_footer(text=f"Job {job.id}")
    return Rendered(_headline(job, "✅ Done"), embed, buttons)


def alone(job: Job, number: int, attachment: str, *, model_name: str) -> Rendered:
    """One image of a gallery on its own (🔍 Image n): the image large, its facts, and ✏️ Edit for it."""
    embed = _card(job, COLOUR_DONE)
    embed.add_field(name="Model", value=model_name)
    embed.set_image(url=f"attachment://{attachment}")
    embed.set_footer(text=f"Job {job.id} · image {number} of {job.count}")
    status = f"🔍 Image {number} of {job.count}"
    return Rendered(_headline(job, status), embed, [ImagineButton("edit", job.id, number, row=0, numbered=False)])


def text_answer(job: Job, missing: list[str], *, too_large: bool = False) -> Rendered:
    """The image is made but cannot be posted here (a permission is missing, or it is too large): say which, and
    where the member finds the image."""
    urls = job.images
    if len(urls) > 1:
        links = " ".join(f"[{number}]({url})" for number, url in enumerate(urls, start=1))
        link = f"Open the images ({links}, links from the image service) or find"
    else:
        link = f"[Open the image]({urls[0]}) (a link from the image service) or find" if urls else "Find"
    if missing:
        what = " and ".join(f"**{name}**" for name in missing)
        why = f"I'm missing {what} in this channel"
        fix = f" A server admin can give me {what} to fix this."
    elif too_large:
        why, fix = "it is larger than this server lets me upload, even re-encoded", ""
    else:
        why, fix = "Discord refused the upload", ""
    text = f"I can't show the image here: {why}. {link} it later with `/imagine-history`.{fix}"
    return Rendered(trim(_headline(job, "✅ Done") + "\n" + text, CONTENT_MAX), None, [ImagineButton("reroll", job.id)])


def notice(job: Job) -> Rendered:
    """How a failed or cancelled job ended, from its row (the same after a restart)."""
    if job.state is JobState.CANCELLED:
        return cancelled(job)
    reason = job.error or "The image could not be made."
    if job.failure_kind is FailureKind.REFUSED:
        return refused(job, reason)
    return failed(job, reason, retryable=job.failure_kind is not FailureKind.FINAL)


def refused(job: Job, reason: str) -> Rendered:
    """A content refusal: says why without showing the prompt again, since the channel already saw enough."""
    embed = discord.Embed(colour=COLOUR_FAILED, description=trim(reason, DESCRIPTION_MAX))
    embed.add_field(name="Requested by", value=requester(job))
    embed.set_footer(text=f"Job {job.id} · the prompt is hidden")
    return Rendered(trim(f"{requester(job)} · ⚠️ Failed · refused by the image service", CONTENT_MAX), embed)


def failed(job: Job, reason: str, retryable: bool) -> Rendered:
    hint = " Press 🔄 to try again." if retryable else ""
    embed = _card(job, COLOUR_FAILED)
    embed.add_field(name="What happened", value=trim(reason + hint, 1024), inline=False)
    buttons = [ImagineButton("reroll", job.id)] if retryable else []
    return Rendered(_headline(job, "⚠️ Failed"), embed, buttons)


def cancelled(job: Job) -> Rendered:
    embed = _card(job, COLOUR_CANCELLED)
    why = job.error or "Stopped before it started: nothing was charged."
    embed.add_field(name="Cancelled", value=trim(why, 1024), inline=False)
    return Rendered(_headline(job, "✖️ Cancelled"), embed)


OUT_OF_CREDIT_NOTICE = (
    "⚠️ The image service this bot uses says its account is out of credit, so new `/imagine` images on this "
    "server wait in line (nothing is lost or charged). The bot's operator needs to top up the RunComfy account; "
    "the waiting images then start by themselves."
)


def limit_refusal(error: LimitReachedError) -> str:
    """One sentence, with the numbers, for a member over one of their limits or the operator's."""
    resets = f" It resets {discord.utils.format_dt(error.frees_at, 'R')}." if error.frees_at else ""
    left = error.allowed - error.used  # a gallery (or a dearer model) may pass a cap a smaller job would not
    if error.limit is Limit.BOT_IMAGES:
        if error.asked > 1 and left >= 1:
            return (
                f"You asked for {error.asked} images, but this bot may make only {left:g} more today (its "
                f"operator's limit for every server together), so nothing was started: ask for fewer.{resets}"
            )
        return (
            f"This bot has made all {error.allowed:g} images its operator allows per day, for every server "
            f"together, so nothing was started.{resets}"
        )
    if error.limit in (Limit.BOT_DAY_USD, Limit.BOT_MONTH_USD):
        budget = "daily budget" if error.limit is Limit.BOT_DAY_USD else "budget for this month"
        if error.cost is not None and left >= 0.005:
            return (
                f"This would cost about {money(error.cost)}, and this bot has {money(left)} left of its operator's "
                f"{budget} ({money(error.allowed)}) for every server together, so nothing was started: ask for "
                f"fewer images or a cheaper model.{resets}"
            )
        return f"This bot has used its operator's {budget} ({money(error.allowed)}), so nothing was started.{resets}"
    if error.limit is Limit.DAILY:
        frees = f" Room frees up {discord.utils.format_dt(error.frees_at, 'R')}." if error.frees_at else ""
        if error.asked > 1 and error.used + 1 <= error.allowed:
            left = int(error.allowed - error.used)
            return (
                f"You asked for {error.asked} images but have {left} left of your {error.allowed} for the last "
                f"24 hours here: ask for fewer.{frees}"
            )
        return f"You've made {error.used} of your {error.allowed} images for the last 24 hours here.{frees}"
    return (
        f"You already have {error.used} image{'s' if error.used != 1 else ''} waiting in this server's line, "
        f"and it holds up to {error.allowed} of yours. Wait for one to start (or cancel one), then try again."
    )


def _took(job: Job) -> str | None:
    end = job.completed_at or job.finished_at
    if end is None:
        return None
    seconds = (end - job.created_at).total_seconds()
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{math.floor(seconds / 60)} min {round(seconds % 60)} s"
