"""What `/imagine`, an edit and a remix share: check everything, write the job, acknowledge, hand it to the line.

Every refusal is ephemeral and nothing is spent before it. Every job is
written before the acknowledgement, so a reply the member can see always has a
job behind it, even if the process dies right after (the restart finds the
reply through the stored interaction token). The job waits in its server's line
until the acknowledgement is confirmed; if the acknowledgement fails in any way
(an HTTP error, a dropped connection, a timeout) the job is abandoned, so
nothing holds a place that nobody will ever see.

An edit's image takes time nobody can promise within Discord's 3 seconds
(docs/discord-platform.md, INT): downloading the member's attachment and
decoding it. (A remix of an edit reads nothing: it names the image its source
keeps, so it goes the text job's way.) So an edit is written like any job (its
limits decided then; what Discord says of the file and its link's life checked
before), acknowledged, and only then is its image fetched, checked and given to
the job; the job is confirmed last, so nothing is sent without its image. A
refusal found after the acknowledgement (the image too big or unreadable) ends
the job unsent, deletes the "thinking..." and tells only the member, in an
ephemeral followup. If the process dies while the image is read, the restart
finds the edit still without its image and ends it with a word in the reply
(JobManager._recover): no "thinking..." is left for good, nothing is charged.
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
from cogs.failures import SOMETHING_WENT_WRONG
from cogs.moderation import BANNED_REFUSAL, find_banned
from storage.base import GuildStore, JobNotFoundError
from storage.models import GuildSettings, Job, JobInput, JobOrigin, NewJob

log = logging.getLogger(__name__)

PARENT_GONE = "The picture this edit starts from was deleted meanwhile, so nothing was started."
STOPPED_WHILE_READING = "This edit was stopped while its image was being read, so nothing was started."

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
        image: Offered | Job | None = None,
    ) -> None:
        """Check everything, write the job, acknowledge. `image` is an edit's input: an attachment still to fetch,
        or the earlier edit (being remixed) whose kept image it starts from again."""
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
        edit: EditInput | None = None
        try:
            if isinstance(image, Offered):
                edit = self._offered(image)
            elif image is not None:
                edit = self.jobs.kept_input(image)  # a remix reads nothing: it names the image its source keeps
        except (ImageRefusedError, InvalidInputError) as error:
            refusal = refusal or str(error)
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
        written = await self._write_then_acknowledge(interaction, new, settings)
        if written is None:
            return
        job_id, reply = written
        if isinstance(image, Offered) and not await self._read_image(interaction, job_id, image):
            return
        await self.jobs.confirm(job_id, reply)

    async def _write_then_acknowledge(
        self, interaction: discord.Interaction[Any], new: NewJob, settings: GuildSettings
    ) -> tuple[int, int | None] | None:
        """The job written (or refused by the limits, ephemerally) within Discord's 3 seconds, then the
        acknowledgement; the job is abandoned if that fails. The job's id and its reply's, or None if refused."""
        try:
            ticket = await self.jobs.enqueue(new, settings)
        except LimitReachedError as error:
            await interaction.response.send_message(render.limit_refusal(error), ephemeral=True)
            return None
        except JobNotFoundError:  # the picture it starts from was deleted (or pruned) since it was clicked
            await interaction.response.send_message(PARENT_GONE, ephemeral=True)
            return None
        try:
            reply = await self._acknowledge(interaction)
        except BaseException:
            # Any failure (an HTTP error, a dropped connection, a cancel): the member saw no reply to wait on.
            await self.jobs.abandon(ticket.job.id, "Discord did not take the acknowledgement")
            raise
        return ticket.job.id, reply

    async def _read_image(self, interaction: discord.Interaction[Any], job_id: int, offered: Offered) -> bool:
        """An edit's image, downloaded and checked after the acknowledgement, given to its job; whether the job
        may go on. A refusal or a failure ends the job unsent and reaches only the member (the job was not
        confirmed, so nothing was sent); a process dying meanwhile leaves the job waiting for its image, which
        the restart ends with a word in the reply (JobManager._recover)."""
        try:
            image = await self.fetcher.fetch(offered)
            kept = JobInput(image.content_type, image.width, image.height, image.data)
            if await self.jobs.attach_input(job_id, kept) is not None:
                return True
            # It ended meanwhile (its channel or server went, its lease was lost), quietly: it was never confirmed.
            text = STOPPED_WHILE_READING
        except (ImageRefusedError, InvalidInputError) as error:
            text = str(error)
        except Exception:
            if self.jobs.alive:
                log.exception("job %d: an edit's image could not be read or kept", job_id, extra={"job_id": job_id})
            text = SOMETHING_WENT_WRONG
        if not self.jobs.alive:
            # The bot is stopping: Discord may take no answer any more, and an ended job would leave the member on
            # "thinking..." for good. Left waiting for its image, the job is answered by the next start.
            log.info("job %d: stopping while an edit's image was read; the next start answers it", job_id)
            return False
        try:
            await self.jobs.abandon(job_id, "its image was refused or could not be kept")
        except Exception:
            # The database failing as well: the member still hears why, privately. The job, waiting without its
            # image, never leaves the line (Line.ready); the next start ends it.
            log.exception("job %d: an edit refused after its acknowledgement could not be ended", job_id)
        await self._refuse_after_acknowledging(interaction, text)
        return False

    @staticmethod
    async def _acknowledge(interaction: discord.Interaction[Any]) -> int | None:
        """The public "thinking..." every job's reply starts as; its message id, when Discord says it."""
        callback = await interaction.response.defer(thinking=True)
        return callback.message_id if callback is not None else None

    @staticmethod
    async def _refuse_after_acknowledging(interaction: discord.Interaction[Any], text: str) -> None:
        """The public "thinking..." goes, then only the member reads why. A followup sent while it still shows would
        fill it, public (docs/discord-platform.md, INT), so it is deleted first."""
        try:
            await interaction.delete_original_response()
        except discord.HTTPException:
            # It could not go: the reply says it instead, so the member is not left on "thinking..." for good.
            try:
                await interaction.edit_original_response(content=text)
            except discord.HTTPException as error:  # the reply is gone with its channel: nobody is left to tell
                log.info("a refusal could not be shown (Discord answered %d)", error.status)
            return
        await interaction.followup.send(text, ephemeral=True)

    def _offered(self, offered: Offered) -> EditInput:
        """An attachment to edit, checked by what Discord says of it (type, size) and its link's life, before
        anything is shown; its bytes follow after the acknowledgement (`_read_image`)."""
        self.fetcher.precheck(offered)
        expires = link_expiry(offered.url)
        if expires is not None and expires - INPUT_LIFE_NEEDED <= self.jobs.clock.now():
            raise ImageRefusedError("That image's link is about to expire. Post it again, then try once more.")
        return EditInput(offered.url, expires, None)
