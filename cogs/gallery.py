"""Starting from an image: ✏️ Edit under a result, 🔍 Image n (one image of a gallery on its own), and the message
context menu "Edit image" on any message with a picture.

An edit asks for its prompt in a form (Discord's modal). The form's custom_id
carries where the image is, since a form is answered in a new interaction:
`imagine:edit-form:<job id>:<n>` names image n of a result (the submission
carries the result message, whose attachment links Discord has just signed);
`imagine:edit-form:m<id>` names a picture picked with "Edit image", whose
link is kept in memory for the form's 15 minutes, because the bot cannot read
other members' attachments later without the privileged Message Content
intent (docs/models.md). The image is downloaded and checked when the
form comes back, and the job starts like any `/imagine`.
"""

from __future__ import annotations

import io
import logging
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.attachments import Offered
from bot.clock import Clock
from bot.model_spec import PROMPT_MAX
from cogs import render
from cogs.access import refuse
from cogs.buttons import UNKNOWN_BUTTON, image_number
from cogs.choices import offered
from cogs.results import on_form
from cogs.starter import JobStarter
from storage.base import JobStore
from storage.models import Job, JobState

log = logging.getLogger(__name__)

EDIT_FORM = "imagine:edit-form:"
EDIT_IMAGE = "Edit image"
PICKED_KEEP = 1000  # pictures picked with "Edit image" whose form is still open; the oldest are forgotten first
PICKED_SECONDS = 15 * 60.0  # an interaction's life: its form cannot come back later
NO_PICTURE = "That message has no picture I can edit (PNG, JPEG, WebP or GIF attached to it)."
FORM_EXPIRED = "That form is too old (or the bot restarted since it opened). Use **Edit image** on the picture again."


class EditForm(discord.ui.Modal):
    """The prompt of an edit; the submission is read by `GalleryCog.on_interaction` (it outlives a restart)."""

    def __init__(self, reference: str) -> None:
        super().__init__(title="Edit this image", custom_id=f"{EDIT_FORM}{reference}", timeout=None)
        self.add_item(
            discord.ui.Label(
                text="What should change?",
                description="Describe the edit, e.g. “make it night, add rain”.",
                component=discord.ui.TextInput(
                    custom_id="prompt", style=discord.TextStyle.paragraph, max_length=PROMPT_MAX
                ),
            )
        )


def picture(message: discord.Message, number: int | None = None) -> discord.Attachment | None:
    """The message's image `number` (by its gallery file name, else its place), or its first image."""
    images = [item for item in message.attachments if (item.content_type or "").startswith("image/")]
    if number is not None:
        named = [item for item in images if item.filename.rsplit(".", 1)[0].endswith(f"-{number}")]
        if named:
            return named[0]
        return images[number - 1] if 0 < number <= len(images) else (images[0] if len(images) == 1 else None)
    return images[0] if images else None


@app_commands.context_menu(name=EDIT_IMAGE)
@app_commands.guild_only()
async def edit_image_menu(interaction: discord.Interaction[Any], message: discord.Message) -> None:
    """Apps → Edit image: a context menu lives outside any cog class in discord.py, so it hands over to the cog."""
    cog = interaction.client.get_cog("Gallery")
    if not isinstance(cog, GalleryCog):
        await interaction.response.send_message("The bot is starting up; try again in a moment.", ephemeral=True)
        return
    await cog.edit_image(interaction, message)


class GalleryCog(commands.Cog, name="Gallery"):
    def __init__(self, bot: commands.Bot, starter: JobStarter, store: JobStore, clock: Clock) -> None:
        self.bot = bot
        self.starter = starter
        self.store = store
        self.clock = clock
        self._picked: OrderedDict[int, tuple[Offered, float]] = OrderedDict()

    async def cog_load(self) -> None:
        self.bot.tree.add_command(edit_image_menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(edit_image_menu.name, type=edit_image_menu.type)

    # -- "Edit image" on any message ---------------------------------------------------

    async def edit_image(self, interaction: discord.Interaction[Any], message: discord.Message) -> None:
        if await refuse(interaction):
            return
        found = picture(message)
        if found is None:
            await interaction.response.send_message(NO_PICTURE, ephemeral=True)
            return
        self._remember(interaction.id, offered(found))
        await interaction.response.send_modal(EditForm(f"m{interaction.id}"))

    def _remember(self, key: int, picked: Offered) -> None:
        now = self.clock.now().timestamp()
        self._picked[key] = (picked, now)
        oldest = now - PICKED_SECONDS
        while self._picked and (len(self._picked) > PICKED_KEEP or next(iter(self._picked.values()))[1] < oldest):
            self._picked.popitem(last=False)

    # -- ✏️ Edit n and 🔍 Image n under a result ----------------------------------------

    async def on_button(self, interaction: discord.Interaction[Any], action: str, job_id: int | None) -> None:
        data: Mapping[str, Any] = interaction.data or {}
        number = image_number(str(data.get("custom_id", "")))
        job = await self.store.get(job_id) if job_id is not None else None
        message = interaction.message
        found = picture(message, number) if message is not None and number is not None else None
        if job is None or found is None or job.state is not JobState.DELIVERED:
            await interaction.response.send_message(UNKNOWN_BUTTON, ephemeral=True)
            return
        if action == "edit":
            await interaction.response.send_modal(EditForm(f"{job.id}:{number}"))
            return
        await self._alone(interaction, job, found, number or 1)

    async def _alone(
        self, interaction: discord.Interaction[Any], job: Job, found: discord.Attachment, number: int
    ) -> None:
        """Image `number` in a message of its own, replying in the channel, with its own ✏️ Edit."""
        await interaction.response.defer(thinking=True)
        data = await found.read()
        rendered = render.alone(job, number, found.filename, model_name=self.starter.registry.name(job.model))
        file = discord.File(
            io.BytesIO(data), filename=found.filename, description=render.alt_text(job, number, job.count)
        )
        await interaction.followup.send(
            content=rendered.content,
            embed=rendered.embed or discord.utils.MISSING,
            view=rendered.view(),
            file=file,
            allowed_mentions=render.NO_MENTIONS,
        )

    # -- the form comes back ----------------------------------------------------------

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction[Any]) -> None:
        await on_form(interaction, EDIT_FORM, self._submitted, "edit")

    async def _submitted(self, interaction: discord.Interaction[Any], reference: str, values: dict[str, str]) -> None:
        source: Offered | None = None
        parent: int | None = None
        if reference.startswith("m"):
            key = int(reference[1:]) if reference[1:].isdigit() else 0
            kept = self._picked.pop(key, None)
            if kept is not None and kept[1] >= self.clock.now().timestamp() - PICKED_SECONDS:
                source = kept[0]
        else:
            raw_job, _, raw_number = reference.partition(":")
            job = await self.store.get(int(raw_job)) if raw_job.isdigit() else None
            message = interaction.message
            found = picture(message, int(raw_number)) if message is not None and raw_number.isdigit() else None
            if job is not None and found is not None and job.origin.guild_id == interaction.guild_id:
                source, parent = offered(found), job.id
        if source is None:
            await interaction.response.send_message(FORM_EXPIRED, ephemeral=True)
            return
        await self.starter.start(
            interaction, prompt=values.get("prompt", ""), aspect_ratio=None, seed=None, parent_id=parent, image=source
        )
