"""`/imagine`, its buttons and the 🔄 reaction: everything a member does to get an image.

The command answers within Discord's 3 seconds by deferring publicly, then
the job's events (from the job manager) edit that reply through the courier.
Rerolls, by button or reaction, are new jobs with a new reply that references
the original.
"""

from __future__ import annotations

import asyncio
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
from cogs import render
from cogs.courier import Attachment, ReplyCourier, UndeliverableError
from cogs.rerolls import RerollGate
from storage.base import JobStore
from storage.models import Job, JobOrigin, JobState, NewJob

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


def missing_permissions(permissions: discord.Permissions) -> list[str]:
    """The names, as Discord's settings show them, of permissions the bot lacks for a job here."""
    return [label for name, label in NEEDED_PERMISSIONS.items() if not getattr(permissions, name)]


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
        self._unsubscribe: Any = None

    async def cog_load(self) -> None:
        self._unsubscribe = self.jobs.subscribe(self.on_job_event)

    async def cog_unload(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        await self.courier.close()

    # -- the command ------------------------------------------------------

    @app_commands.command(name="imagine", description="Create an image from a text prompt")
    @app_commands.describe(
        prompt="What the image should show (up to 2,048 characters)",
        aspect_ratio="The image's shape (default 1:1 · square)",
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
        aspect_ratio: str = DEFAULT_RATIO,
        seed: app_commands.Range[int, 0, SEED_MAX] | None = None,
    ) -> None:
        try:
            text = clean_prompt(prompt)
            chosen_seed = check_seed(seed)
        except InvalidInputError as error:
            await interaction.response.send_message(str(error), ephemeral=True)
            return
        if aspect_ratio not in render.RATIO_NAMES:
            await interaction.response.send_message(
                f"'{discord.utils.escape_markdown(aspect_ratio[:20])}' is not an aspect ratio; pick one from the list.",
                ephemeral=True,
            )
            return
        missing = missing_permissions(interaction.app_permissions)
        if missing:
            await interaction.response.send_message(
                f"I can't post images here: I'm missing **{', '.join(missing)}** in this channel. "
                "Ask a server admin to allow it, or use another channel.",
                ephemeral=True,
            )
            return
        callback = await interaction.response.defer(thinking=True)
        origin = JobOrigin(
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id,
            user_id=interaction.user.id,
            message_id=callback.message_id if callback is not None else None,
            application_id=interaction.application_id,
            interaction_token=interaction.token,
            token_expires_at=interaction.expires_at,
            filesize_limit=interaction.filesize_limit,
        )
        job = await self.jobs.create(
            NewJob(model=self.model, prompt=text, aspect_ratio=aspect_ratio, seed=chosen_seed, origin=origin)
        )
        self.courier.remember(job.id, interaction)
        await self.jobs.send(job)

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
            outcome = await self.jobs.cancel(job.id)
            await interaction.followup.send(CANCEL_ANSWERS[outcome], ephemeral=True)
            return
        if not self.rerolls.admit(interaction.user.id, job.id):
            await interaction.response.send_message("Already rerolling that one for you.", ephemeral=True)
            return
        await interaction.response.defer()  # acknowledges the click; the reroll is a new message
        refusal = await self.reroll(job, interaction.user.id)
        if refusal:
            await interaction.followup.send(refusal, ephemeral=True)

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        if str(payload.emoji) != REROLL_EMOJI or self.bot.user is None or payload.user_id == self.bot.user.id:
            return
        job = await self.store.by_message_id(payload.message_id)
        if job is None or job.state is not JobState.DELIVERED or job.origin.channel_id != payload.channel_id:
            return
        if self.rerolls.admit(payload.user_id, job.id):
            refusal = await self.reroll(job, payload.user_id)
            if refusal:
                log.info("reaction reroll of job %d refused: %s", job.id, refusal)

    async def reroll(self, source: Job, user_id: int) -> str | None:
        """Start a new job like `source` with a new seed, replying to it; a refusal sentence, or None."""
        channel = self.bot.get_channel(source.origin.channel_id or 0)
        if not isinstance(channel, discord.abc.GuildChannel) or not isinstance(channel, discord.abc.Messageable):
            return "I can't see that channel any more."
        missing = missing_permissions(channel.permissions_for(channel.guild.me))
        if missing:
            return f"I can't post images here: I'm missing **{', '.join(missing)}** in this channel."
        origin = JobOrigin(
            guild_id=channel.guild.id,
            channel_id=channel.id,
            user_id=user_id,
            filesize_limit=channel.guild.filesize_limit,
        )
        new = NewJob(
            model=source.model,
            prompt=source.prompt,
            aspect_ratio=source.aspect_ratio,
            seed=check_seed(None),
            origin=origin,
            parent_id=source.id,
        )
        job = await self.jobs.create(new)
        first = render.waiting(job)
        reference = discord.MessageReference(
            message_id=source.origin.message_id or 0, channel_id=channel.id, fail_if_not_exists=False
        )
        try:
            message = await channel.send(
                content=first.content,
                embed=first.embed,
                reference=reference,
                allowed_mentions=render.NO_MENTIONS,
            )
        except discord.HTTPException as error:
            await self.jobs.mark_undeliverable(job.id, f"could not post the reroll ({error.status})")
            return "I couldn't post in this channel."
        job = await self.store.update(job.id, now=self.jobs.clock(), message_id=message.id)
        await self.jobs.send(job)
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
        elif isinstance(event, JobFailed):
            await self._deliver_final(job, render.failed(job, event.reason, event.retryable))
        elif isinstance(event, JobCancelled):
            await self._deliver_final(job, render.cancelled(job))

    async def _deliver_image(self, event: JobCompleted) -> None:
        job = event.job
        limit = job.origin.filesize_limit or DEFAULT_UPLOAD_LIMIT
        image = await asyncio.to_thread(fit_under, event.image.data, event.image.format, limit)
        if image.reencoded:
            log.info("job %d: image re-encoded to fit %d bytes", job.id, limit, extra={"job_id": job.id})
        name = render.file_name(job, image.extension)
        rendered = render.finished(job, name, model_name=self.model_name)
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

    async def _deliver_final(self, job: Job, rendered: render.Rendered) -> None:
        try:
            await self.courier.deliver(job, rendered)
        except UndeliverableError as error:
            log.info("job %d: final state not shown: %s", job.id, error, extra={"job_id": job.id})

    @property
    def model_name(self) -> str:
        return "ImagineArt 1.5" if self.model.startswith("imagineart/imagineart-1.5") else self.model
