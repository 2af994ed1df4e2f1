"""What `/imagine` and a remix share: check everything, write the job, acknowledge, hand it to the line.

Every refusal is ephemeral and comes before anything is written or spent. The
job row is written before the acknowledgement, so a reply the member can see
always has a job behind it, even if the process dies right after (the restart
finds the reply through the stored interaction token). The job waits in its
server's line until the acknowledgement is confirmed; if the acknowledgement
fails in any way (an HTTP error, a dropped connection, a timeout) the job is
abandoned, so nothing holds a place that nobody will ever see.
"""

from __future__ import annotations

import logging
from typing import Any

import discord

from bot.attachments import AttachmentFetcher, ImageRefusedError, Offered, link_expiry
from bot.jobs import JobManager, LimitReachedError
from bot.jobs.orders import INPUT_LIFE_NEEDED, EditInput, order
from bot.model_registry import Choices, check_choices, choose
from bot.model_spec import InvalidInputError, check_seed, clean_prompt
from cogs import render
from cogs.moderation import BANNED_REFUSAL, find_banned
from storage.base import GuildStore
from storage.models import GuildSettings, JobInput, JobOrigin

log = logging.getLogger(__name__)

NEEDED_PERMISSIONS = {"send_messages": "Send Messages", "embed_links": "Embed Links", "attach_files": "Attach Files"}


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


class JobStarter:
    def __init__(self, jobs: JobManager, guilds: GuildStore, *, model: str, fetcher: AttachmentFetcher) -> None:
        self.jobs = jobs
        self.guilds = guilds
        self.model = model
        self.registry = jobs.registry
        self.fetcher = fetcher

    async def start(
        self,
        interaction: discord.Interaction[Any],
        *,
        prompt: str,
        aspect_ratio: str | None,
        seed: int | None,
        parent_id: int | None = None,
        model: str | None = None,
        count: int | None = None,
        image: Offered | EditInput | None = None,
    ) -> None:
        """Check everything, write the job, acknowledge. `image` is an edit's input: an attachment still to fetch,
        or (a reroll, a remix) the input of an earlier job."""
        if interaction.guild_id is None:
            await interaction.response.send_message("Images are made in servers, not in DMs.", ephemeral=True)
            return
        if aspect_ratio is not None and aspect_ratio not in render.RATIO_NAMES:
            shown = discord.utils.escape_markdown(aspect_ratio[:20])
            await interaction.response.send_message(
                f"'{shown}' is not an aspect ratio; pick one from the list.", ephemeral=True
            )
            return
        settings = await self.guilds.get(interaction.guild_id)
        try:
            text = clean_prompt(prompt)
            if seed is not None:
                check_seed(seed)  # a whole number in the bot's range first; then within the model's own
            chosen = choose(self.registry, settings, model, image=image is not None)
            check_choices(
                chosen, Choices(ratio=aspect_ratio, seed=seed, count=count, image=image is not None, prompt=text)
            )
        except InvalidInputError as error:
            await interaction.response.send_message(str(error), ephemeral=True)
            return
        ratio = aspect_ratio or (
            settings.default_aspect_ratio if settings.default_aspect_ratio in chosen.ratios else None
        )
        refusal = prompt_refusal(settings, interaction.channel, text)
        missing = missing_permissions(interaction.app_permissions)
        if refusal is None and missing:
            refusal = (
                f"I can't post images here: I'm missing **{', '.join(missing)}** in this channel. "
                "Ask a server admin to allow it, or use another channel."
            )
        edit: EditInput | None = image if isinstance(image, EditInput) else None
        if refusal is None and isinstance(image, Offered):
            try:
                edit = await self._fetch(image)
            except ImageRefusedError as error:
                refusal = str(error)
        if refusal is not None:
            await interaction.response.send_message(refusal, ephemeral=True)
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
        new = order(
            chosen,
            prompt=text,
            ratio=ratio,
            seed=seed,
            count=count or 1,
            origin=origin,
            parent_id=parent_id,
            exempt=settings.admins_bypass and interaction.permissions.manage_guild,
            edit=edit,
        )
        try:
            ticket = await self.jobs.enqueue(new, settings)
        except LimitReachedError as error:
            await interaction.response.send_message(render.limit_refusal(error), ephemeral=True)
            return
        try:
            callback = await interaction.response.defer(thinking=True)
        except BaseException:
            # Any failure (an HTTP error, a dropped connection, a cancel): the member saw no reply to wait on.
            await self.jobs.abandon(ticket.job.id, "Discord did not take the acknowledgement")
            raise
        await self.jobs.confirm(ticket.job.id, callback.message_id if callback is not None else None)

    async def _fetch(self, offered: Offered) -> EditInput:
        """The member's image, downloaded and checked now (its link expires), with the link RunComfy is sent."""
        image = await self.fetcher.fetch(offered)
        expires = link_expiry(offered.url)
        if expires is not None and expires - INPUT_LIFE_NEEDED <= self.jobs.clock.now():
            raise ImageRefusedError("That image's link is about to expire. Post it again, then try once more.")
        return EditInput(offered.url, expires, JobInput(image.content_type, image.width, image.height, image.data))
