"""`/imagine` and its ❌ Cancel button: what a member does to start an image, and to stop one.

The command answers within Discord's 3 seconds by deferring publicly; the
job's events then edit that reply (cogs/delivery.py). Everything a job goes
through after the command belongs to the job manager: this cog asks and
renders, it never writes a job.
"""

from __future__ import annotations

import logging
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.jobs import CancelOutcome, JobManager
from bot.model_registry import MAX_COUNT
from bot.model_spec import PROMPT_MAX, SEED_MAX
from cogs import choices
from cogs.buttons import UNKNOWN_BUTTON
from cogs.choices import offered
from cogs.starter import JobStarter
from storage.base import JobStore

log = logging.getLogger(__name__)

CANCEL_ANSWERS = {
    CancelOutcome.CANCELLED: "Cancelled before it started: nothing was charged.",
    CancelOutcome.TOO_LATE: "Too late to cancel: RunComfy is already generating it, so it will finish (and is billed).",
    CancelOutcome.ALREADY_FINISHED: "That job has already finished.",
    CancelOutcome.UNKNOWN_JOB: "I don't know that job any more.",
    CancelOutcome.UNREACHABLE: (
        "I couldn't reach the part of the bot making this image just now. Try again in a minute."
    ),
}


class ImagineCog(commands.Cog, name="Imagine"):
    def __init__(self, starter: JobStarter, jobs: JobManager, store: JobStore) -> None:
        self.starter = starter
        self.jobs = jobs
        self.store = store

    @app_commands.command(name="imagine", description="Create an image from a text prompt")
    @app_commands.describe(
        prompt="What the image should show (up to 2,048 characters)",
        aspect_ratio="The image's shape (default: the server's, normally 1:1 · square)",
        seed="A number that makes the image reproducible (random when left out)",
        model="Which model makes it (default: the server's)",
        count="How many images at once, where the model allows (1 to 4)",
        image="A picture of yours to edit (it goes to an edit model)",
    )
    @app_commands.guild_only()
    async def imagine(
        self,
        interaction: discord.Interaction[Any],
        prompt: app_commands.Range[str, 1, PROMPT_MAX],
        aspect_ratio: str | None = None,
        seed: app_commands.Range[int, 0, SEED_MAX] | None = None,
        model: app_commands.Range[str, 1, 100] | None = None,
        count: app_commands.Range[int, 1, MAX_COUNT] | None = None,
        image: discord.Attachment | None = None,
    ) -> None:
        await self.starter.start(
            interaction,
            prompt=prompt,
            aspect_ratio=aspect_ratio,
            seed=seed,
            model=model,
            count=count,
            image=offered(image) if image is not None else None,
        )

    # The pickers, asked by Discord while the member types (cogs/choices.py says what each offers).

    @imagine.autocomplete("model")
    async def _models(self, interaction: discord.Interaction[Any], current: str) -> list[app_commands.Choice[str]]:
        return choices.models(await choices.picking(self.jobs.registry, self.store, interaction), current)

    @imagine.autocomplete("aspect_ratio")
    async def _ratios(self, interaction: discord.Interaction[Any], current: str) -> list[app_commands.Choice[str]]:
        return choices.ratios(await choices.picking(self.jobs.registry, self.store, interaction), current)

    @imagine.autocomplete("count")
    async def _counts(self, interaction: discord.Interaction[Any], current: str) -> list[app_commands.Choice[int]]:
        return choices.counts(await choices.picking(self.jobs.registry, self.store, interaction))

    async def on_button(self, interaction: discord.Interaction[Any], action: str, job_id: int | None) -> None:
        """❌ Cancel, and any `imagine:` button nobody else answers (forged or from an older release)."""
        job = await self.store.get(job_id) if job_id is not None else None
        message_id = interaction.message.id if interaction.message else None
        if job is None or job.origin.message_id != message_id or action != "cancel":
            await interaction.response.send_message(UNKNOWN_BUTTON, ephemeral=True)
            return
        if interaction.user.id != job.origin.user_id:
            await interaction.response.send_message("Only the member who asked can cancel it.", ephemeral=True)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        outcome = await self.jobs.cancel(job.id)
        await interaction.followup.send(CANCEL_ANSWERS[outcome], ephemeral=True)
