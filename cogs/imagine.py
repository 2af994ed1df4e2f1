"""`/imagine`, its buttons and the 🔄 reaction: everything a member does to get an image.

The command answers within Discord's 3 seconds by deferring publicly, then
the job's events (from the job manager) edit that reply through the courier.
Rerolls, by button or reaction, are new jobs with a new reply that references
the original.

Before anything is spent, each new job (command, reroll or remix) passes the
server's settings (allowed channels, banned words) and its limits
(`cogs/limits.py`); refusals are ephemeral and give the numbers. A job over the
server's slot limit waits in the bot's own line, shown as "waiting for a free
slot · #2", and starts when a job of that server finishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.events import JobCancelled, JobCompleted, JobEvent, JobFailed, JobQueued, JobRunning
from bot.images import fit_under
from bot.jobs import CancelOutcome, JobManager
from bot.model_spec import (
    ASPECT_RATIOS,
    DEFAULT_RATIO,
    PROMPT_MAX,
    SEED_MAX,
    InvalidInputError,
    check_seed,
    clean_prompt,
)
from bot.runcomfy_errors import ModerationError
from cogs import render
from cogs.cost import PriceBook
from cogs.courier import Attachment, ReplyCourier, UndeliverableError
from cogs.limits import Admission, LimitReachedError
from cogs.lines import WaitingLines
from cogs.moderation import BANNED_REFUSAL, find_banned
from cogs.rerolls import RerollGate
from storage.base import JobStore
from storage.models import GuildSettings, Job, JobOrigin, JobState, NewJob

log = logging.getLogger(__name__)

DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
REROLL_EMOJI = "🔄"
NEEDED_PERMISSIONS = {"send_messages": "Send Messages", "embed_links": "Embed Links", "attach_files": "Attach Files"}
CANCEL_ANSWERS = {
    CancelOutcome.CANCELLED: "Cancelled before it started: nothing was charged.",
    CancelOutcome.TOO_LATE: "Too late to cancel: RunComfy is already generating it, so it will finish (and is billed).",
    CancelOutcome.ALREADY_FINISHED: "That job has already finished.",
    CancelOutcome.UNKNOWN_JOB: "I don't know that job any more.",
}
UNKNOWN_BUTTON = "That button belongs to an image I don't know (any more)."
CANCELLED_WAITING = "Cancelled while it waited for a slot: nothing was sent or charged."


def missing_permissions(permissions: discord.Permissions) -> list[str]:
    """The names, as Discord's settings show them, of permissions the bot lacks for a job here."""
    return [label for name, label in NEEDED_PERMISSIONS.items() if not getattr(permissions, name)]


def channel_refusal(settings: GuildSettings, channel: object) -> str | None:
    """Why images can't be made in `channel` under the server's allowed list, or None (a thread follows its
    parent channel)."""
    if not settings.allowed_channels:
        return None
    ids = {getattr(channel, "id", None), getattr(channel, "parent_id", None)}
    if ids & settings.allowed_channels:
        return None
    places = " ".join(f"<#{channel_id}>" for channel_id in sorted(settings.allowed_channels)[:10])
    return f"Images aren't made in this channel on this server. Try {places}."


def prompt_refusal(settings: GuildSettings, channel: object, prompt: str) -> str | None:
    """The server's reasons not to start this prompt here, before anything is spent."""
    refusal = channel_refusal(settings, channel)
    if refusal is None and find_banned(prompt, settings.banned_terms):
        refusal = BANNED_REFUSAL
    return refusal


class ImagineCog(commands.Cog, name="Imagine"):
    def __init__(
        self, bot: commands.Bot, jobs: JobManager, store: JobStore, *, model: str, courier: ReplyCourier
    ) -> None:
        self.bot = bot
        self.jobs = jobs
        self.store = store
        self.model = model
        self.courier = courier
        self.rerolls = RerollGate()
        self.lines = WaitingLines(bot, store, jobs, courier)
        self.admission = self.lines.admission
        self.prices = PriceBook(jobs.client.model_info)
        self._unsubscribe: Any = None

    async def cog_load(self) -> None:
        self._unsubscribe = self.jobs.subscribe(self.on_job_event)
        self.lines.start()

    async def cog_unload(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        await self.lines.close()
        await self.courier.close()

    # -- the command ------------------------------------------------------

    @app_commands.command(name="imagine", description="Create an image from a text prompt")
    @app_commands.describe(
        prompt="What the image should show (up to 2,048 characters)",
        aspect_ratio="The image's shape (default: the server's, normally 1:1 · square)",
        seed="A number that makes the image reproducible (random when left out)",
    )
    @app_commands.choices(
        aspect_ratio=[app_commands.Choice(name=ratio.choice_name, value=ratio.value) for ratio in ASPECT_RATIOS]
    )
    @app_commands.guild_only()
    async def imagine(
        self,
        interaction: discord.Interaction[Any],
        prompt: app_commands.Range[str, 1, PROMPT_MAX],
        aspect_ratio: str | None = None,
        seed: app_commands.Range[int, 0, SEED_MAX] | None = None,
    ) -> None:
        await self.start_job(interaction, prompt=prompt, aspect_ratio=aspect_ratio, seed=seed)

    async def start_job(
        self,
        interaction: discord.Interaction[Any],
        *,
        prompt: str,
        aspect_ratio: str | None,
        seed: int | None,
        parent_id: int | None = None,
    ) -> None:
        """What `/imagine` and a remix share: check everything, acknowledge, then start the job or queue it.

        Every refusal is ephemeral and comes before anything is spent. The
        server's lock is held from the limit check until the job row exists, so
        two commands at once can't both take the last slot.
        """
        if interaction.guild_id is None:
            await interaction.response.send_message("Images are made in servers, not in DMs.", ephemeral=True)
            return
        try:
            text = clean_prompt(prompt)
            chosen_seed = check_seed(seed)
        except InvalidInputError as error:
            await interaction.response.send_message(str(error), ephemeral=True)
            return
        settings = await self.store.guilds.get(interaction.guild_id)
        ratio = aspect_ratio or settings.default_aspect_ratio or DEFAULT_RATIO
        refusal = prompt_refusal(settings, interaction.channel, text)
        if ratio not in render.RATIO_NAMES:
            refusal = f"'{discord.utils.escape_markdown(ratio[:20])}' is not an aspect ratio; pick one from the list."
        missing = missing_permissions(interaction.app_permissions)
        if refusal is None and missing:
            refusal = (
                f"I can't post images here: I'm missing **{', '.join(missing)}** in this channel. "
                "Ask a server admin to allow it, or use another channel."
            )
        if refusal is not None:
            await interaction.response.send_message(refusal, ephemeral=True)
            return
        bypass = settings.admins_bypass and interaction.permissions.manage_guild
        async with self.admission.lock(interaction.guild_id):
            try:
                admission = await self.admission.admit(settings, interaction.user.id, bypass=bypass)
            except LimitReachedError as error:
                await interaction.response.send_message(str(error), ephemeral=True)
                return
            origin = JobOrigin(
                guild_id=interaction.guild_id,
                channel_id=interaction.channel_id,
                user_id=interaction.user.id,
                application_id=interaction.application_id,
                interaction_token=interaction.token,
                token_expires_at=interaction.expires_at,
                filesize_limit=interaction.filesize_limit,
            )
            new = NewJob(
                model=self.model, prompt=text, aspect_ratio=ratio, seed=chosen_seed, origin=origin, parent_id=parent_id
            )
            # The row before the acknowledgement: a reply the member can see always has a job behind it, even
            # if the process dies right after (the restart fails it with a clear message, through the token).
            job = await self._create(new, admission)
        try:
            callback = await interaction.response.defer(thinking=True)
        except discord.HTTPException:
            await self.jobs.mark_undeliverable(job.id, "Discord did not take the acknowledgement; nothing was sent")
            raise
        if callback is not None and callback.message_id is not None:
            job = await self.store.update(job.id, now=self.jobs.clock(), message_id=callback.message_id)
        self.courier.remember(job.id, interaction)
        await self._start_or_show(job, admission)

    async def _create(self, new: NewJob, admission: Admission) -> Job:
        if admission.waits:
            job = await self.store.create(new, now=self.jobs.clock(), state=JobState.WAITING)
            log.info("job %d waits for a slot (#%s)", job.id, admission.position, extra={"job_id": job.id})
            return job
        return await self.jobs.create(new)

    async def _start_or_show(self, job: Job, admission: Admission) -> None:
        """After the acknowledgement: send the job, or let it take its place in the server's line."""
        if admission.position is None:
            await self.jobs.send(job)
        else:
            self.lines.confirm(job, admission.position)

    async def cog_app_command_error(
        self, interaction: discord.Interaction[Any], error: app_commands.AppCommandError
    ) -> None:
        """Any failure of ours becomes one sentence for the member, never a reply stuck on "thinking"."""
        log.error("/%s failed", interaction.command.name if interaction.command else "?", exc_info=error)
        text = "Something went wrong on my side and the image was not started. Please try again in a moment."
        try:
            if interaction.response.is_done():
                await interaction.edit_original_response(content=f"⚠️ {text}", embed=None, view=None)
            else:
                await interaction.response.send_message(text, ephemeral=True)
        except discord.HTTPException:
            log.warning("could not tell the member about the failure")

    # -- buttons and reactions -------------------------------------------

    async def on_button(self, interaction: discord.Interaction[Any], action: str, job_id: int | None) -> None:
        job = await self.store.get(job_id) if job_id is not None else None
        message_id = interaction.message.id if interaction.message else None
        if job is None or job.origin.message_id != message_id or action not in ("reroll", "cancel"):
            await interaction.response.send_message(UNKNOWN_BUTTON, ephemeral=True)
            return
        if action == "cancel":
            if interaction.user.id != job.origin.user_id:
                await interaction.response.send_message("Only the member who asked can cancel it.", ephemeral=True)
                return
            await interaction.response.defer(ephemeral=True, thinking=True)
            answer = await self.cancel(job)
            await interaction.followup.send(answer, ephemeral=True)
            return
        if not self.rerolls.admit(interaction.user.id, job.id):
            await interaction.response.send_message("Already rerolling that one for you.", ephemeral=True)
            return
        try:
            await interaction.response.defer()  # acknowledges the click; the reroll is a new message
        except discord.NotFound:  # the message was deleted between the click and now
            await interaction.response.send_message("That image was deleted: nothing to reroll.", ephemeral=True)
            return
        refusal = await self.reroll(job, interaction.user.id, bypass=interaction.permissions.manage_guild)
        if refusal:
            await interaction.followup.send(refusal, ephemeral=True)

    async def cancel(self, job: Job) -> str:
        """Cancel a job: one still in the server's line is ours to drop; a sent one goes to the job manager."""
        cancelled = await self.lines.cancel(job)
        if cancelled is not None:
            await self._deliver_final(cancelled, render.cancelled(cancelled))
            return CANCELLED_WAITING
        return CANCEL_ANSWERS[await self.jobs.cancel(job.id)]

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        if str(payload.emoji) != REROLL_EMOJI or self.bot.user is None or payload.user_id == self.bot.user.id:
            return
        job = await self.store.by_message_id(payload.message_id)
        if job is None or job.state is not JobState.DELIVERED or job.origin.channel_id != payload.channel_id:
            return
        if payload.guild_id is None or not (await self.store.guilds.get(payload.guild_id)).reaction_reroll:
            return
        if self.rerolls.admit(payload.user_id, job.id):
            member = payload.member
            bypass = member is not None and member.guild_permissions.manage_guild
            refusal = await self.reroll(job, payload.user_id, bypass=bypass)
            if refusal:
                log.info("reaction reroll of job %d refused: %s", job.id, refusal)
                if member is not None:
                    with contextlib.suppress(discord.HTTPException):  # a reaction has no ephemeral reply; a DM is next
                        await member.send(
                            f"Your 🔄 reroll was not started: {refusal}", allowed_mentions=render.NO_MENTIONS
                        )

    async def reroll(self, source: Job, user_id: int, *, bypass: bool = False) -> str | None:
        """Start a new job like `source` with a new seed, replying to it; a refusal sentence, or None.

        The same checks as `/imagine` come first: the server's channels, banned
        words (a term added since the original still counts) and limits.
        """
        channel = self.bot.get_channel(source.origin.channel_id or 0)
        if not isinstance(channel, discord.abc.GuildChannel) or not isinstance(channel, discord.abc.Messageable):
            return "I can't see that channel any more."
        missing = missing_permissions(channel.permissions_for(channel.guild.me))
        if missing:
            return f"I can't post images here: I'm missing **{', '.join(missing)}** in this channel."
        settings = await self.store.guilds.get(channel.guild.id)
        refusal = prompt_refusal(settings, channel, source.prompt)
        if refusal is not None:
            return refusal
        async with self.admission.lock(channel.guild.id):
            try:
                admission = await self.admission.admit(settings, user_id, bypass=settings.admins_bypass and bypass)
            except LimitReachedError as error:
                return str(error)
            return await self._post_reroll(channel, channel.guild, channel.id, source, user_id, admission)

    async def _post_reroll(
        self,
        channel: discord.abc.Messageable,
        guild: discord.Guild,
        channel_id: int,
        source: Job,
        user_id: int,
        admission: Admission,
    ) -> str | None:
        """Create the reroll and post its message (under the server's lock, so the line never meets a job
        without a message); the send to RunComfy happens after."""
        origin = JobOrigin(
            guild_id=guild.id, channel_id=channel_id, user_id=user_id, filesize_limit=guild.filesize_limit
        )
        new = NewJob(
            model=source.model,
            prompt=source.prompt,
            aspect_ratio=source.aspect_ratio,
            seed=check_seed(None),
            origin=origin,
            parent_id=source.id,
        )
        job = await self._create(new, admission)
        if admission.position is None:
            first = render.waiting(job)
        else:
            first = render.waiting_for_slot(job, admission.position)
            self.lines.remember(job, admission.position)
        reference = discord.MessageReference(
            message_id=source.origin.message_id or 0, channel_id=channel_id, fail_if_not_exists=False
        )
        try:
            message = await channel.send(
                content=first.content,
                embed=first.embed,
                view=first.view(),
                reference=reference,
                allowed_mentions=render.NO_MENTIONS,
            )
        except discord.HTTPException as error:
            await self.jobs.mark_undeliverable(job.id, f"could not post the reroll ({error.status})")
            return "I couldn't post in this channel."
        job = await self.store.update(job.id, now=self.jobs.clock(), message_id=message.id)
        if admission.position is None:
            self.lines.spawn(self.jobs.send(job), f"send-{job.id}")
        return None

    # -- job events -> the member's reply ----------------------------------

    async def on_job_event(self, event: JobEvent) -> None:
        job = event.job
        if job.origin.channel_id is None:
            return  # not a Discord job (the CLI shares the store)
        if isinstance(event, JobQueued):
            self.courier.show(job, render.queued(job, event.position))
        elif isinstance(event, JobRunning):
            self.courier.show(job, render.generating(job, event.eta))
        elif isinstance(event, JobCompleted):
            await self._deliver_image(event)
            self.lines.freed(job)
        elif isinstance(event, JobFailed):
            if event.reason == ModerationError.default_user_message:
                rendered = render.refused(job, event.reason)
            else:
                rendered = render.failed(job, event.reason, event.retryable)
            await self._deliver_final(job, rendered)
            self.lines.freed(job)
        elif isinstance(event, JobCancelled):
            await self._deliver_final(job, render.cancelled(job))
            self.lines.freed(job)

    async def _deliver_image(self, event: JobCompleted) -> None:
        job = event.job
        limit = job.origin.filesize_limit or DEFAULT_UPLOAD_LIMIT
        image = await asyncio.to_thread(fit_under, event.image.data, event.image.format, limit)
        if image.reencoded:
            log.info("job %d: image re-encoded to fit %d bytes", job.id, limit, extra={"job_id": job.id})
        name = render.file_name(job, image.extension)
        job = await self._with_cost(job)
        settings = await self.store.guilds.get(job.origin.guild_id) if job.origin.guild_id else None
        rendered = render.finished(
            job, name, model_name=self.model_name, show_cost=bool(settings and settings.show_cost)
        )
        try:
            how = await self.courier.deliver(job, rendered, Attachment(image, name, render.alt_text(job)))
        except UndeliverableError as error:
            await self.jobs.mark_undeliverable(job.id, str(error))
        except Exception:
            # A bug must not leave the job "completed" forever: record it, so it is not retried in a loop.
            log.exception("job %d: delivery failed unexpectedly", job.id, extra={"job_id": job.id})
            await self.jobs.mark_undeliverable(job.id, "delivery failed unexpectedly")
        else:
            await self.jobs.mark_delivered(job.id, how)

    async def _with_cost(self, job: Job) -> Job:
        """The job with a cost: RunComfy's, or the model's base price marked as an estimate."""
        if job.cost_usd is not None:
            return job
        price = await self.prices.base_price()
        if price is None:
            return job
        return await self.store.update(job.id, now=self.jobs.clock(), cost_usd=price, cost_estimated=True)

    async def _deliver_final(self, job: Job, rendered: render.Rendered) -> None:
        try:
            await self.courier.deliver(job, rendered)
        except UndeliverableError as error:
            log.info("job %d: final state not shown: %s", job.id, error, extra={"job_id": job.id})

    @property
    def model_name(self) -> str:
        return "ImagineArt 1.5" if self.model.startswith("imagineart/imagineart-1.5") else self.model
