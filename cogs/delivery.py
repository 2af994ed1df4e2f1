"""Where a job's results land in Discord: the member's reply, kept truthful from the first state to the last.

`DiscordDestination` is the job manager's `Destination`: one delivery attempt
per call, and an outcome the manager persists and retries on. It degrades
instead of dropping: without Attach Files (or when the file is too large even
after re-encoding) the member gets a text answer naming what is missing and
where the image is; without Embed Links the image comes with plain-text
details. A deleted reply, channel or server ends the job's delivery: nothing
more is sent.

`DeliveryCog` turns the manager's passing events into status edits and tells
the manager when Discord says a reply, channel or server is gone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import discord
from discord.ext import commands

from bot.download import DownloadedImage
from bot.images import EncodedImage, ImageWorkers
from bot.jobs import Delivered, Gone, JobManager, RecoveredReply, Retry
from bot.jobs.delivery import Outcome
from bot.jobs.events import (
    JobCancelled,
    JobDelivered,
    JobEvent,
    JobFailed,
    JobQueued,
    JobRunning,
    JobSubmitting,
    JobUndeliverable,
    JobWaiting,
    NoticeLost,
    NoticeShown,
    ReplyGone,
    WaitReason,
)
from bot.model_registry import ModelRegistry
from cogs import render
from cogs.courier import (
    MISSING_PERMISSIONS,
    Attachment,
    CourierError,
    RefusedError,
    ReplyCourier,
    ReplyGoneError,
    Sent,
    UnavailableError,
)
from storage.base import GuildStore
from storage.models import Job

log = logging.getLogger(__name__)

DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
# Discord takes at most 25 MiB in one request, whatever each file may weigh (docs/models.md, "Several images in one
# reply"); the margin leaves room for the JSON payload and the multipart framing.
REQUEST_LIMIT = 25 * 1024 * 1024
REQUEST_MARGIN = 256 * 1024
TOO_LARGE = 413


def per_file_limit(file_limit: int, files: int) -> int:
    """What each of `files` images may weigh so that each passes the per-file limit and all pass the request's."""
    return min(file_limit, (REQUEST_LIMIT - REQUEST_MARGIN) // max(files, 1))


class DiscordDestination:
    def __init__(
        self,
        bot: discord.Client,
        courier: ReplyCourier,
        guilds: GuildStore,
        images: ImageWorkers,
        registry: ModelRegistry,
    ) -> None:
        self.bot = bot
        self.registry = registry
        self.courier = courier
        self.guilds = guilds
        self.images = images

    async def deliver_images(self, job: Job, images: Sequence[DownloadedImage]) -> Outcome:
        permissions = self._permissions(job)
        if permissions is not None and not permissions.attach_files:
            return await self._text_answer(job, ["Attach Files"])
        limit = per_file_limit(job.origin.filesize_limit or DEFAULT_UPLOAD_LIMIT, len(images))
        settings = await self.guilds.get(job.origin.guild_id) if job.origin.guild_id else None
        for budget in (limit, limit // 2):
            fitted = [await self.images.fit_under(image.data, image.format, budget) for image in images]
            if any(one.reencoded for one in fitted):
                log.info("job %d: images re-encoded to fit %d bytes each", job.id, budget, extra={"job_id": job.id})
            try:
                sent = await self.courier.deliver(job, *self._result(job, fitted, permissions, settings))
            except RefusedError as error:
                if error.status == TOO_LARGE:
                    continue  # a smaller encoding may still pass
                if error.code == MISSING_PERMISSIONS:
                    return await self._text_answer(job, self._missing(job) or ["Attach Files"])
                return await self._text_answer(job, [])
            except CourierError as error:
                return _outcome(error)
            return Delivered(sent.how, sent.message_id)
        return await self._text_answer(job, [], too_large=True)

    def _result(
        self,
        job: Job,
        fitted: Sequence[EncodedImage],
        permissions: discord.Permissions | None,
        settings: object,
    ) -> tuple[render.Rendered, list[Attachment]]:
        total = len(fitted)
        attachments = [
            Attachment(one, render.file_name(job, one.extension, number, total), render.alt_text(job, number, total))
            for number, one in enumerate(fitted, start=1)
        ]
        rendered = render.finished(
            job,
            [attachment.filename for attachment in attachments],
            model_name=self.registry.name(job.model),
            show_cost=bool(getattr(settings, "show_cost", False)),
            embed_links=permissions is None or permissions.embed_links,
        )
        return rendered, attachments

    async def _text_answer(self, job: Job, missing: list[str], *, too_large: bool = False) -> Outcome:
        """The image cannot be shown here: say why and where it is, instead of dropping it."""
        rendered = render.text_answer(job, missing, too_large=too_large)
        log.info("job %d: answered with text (missing %s)", job.id, missing or "nothing", extra={"job_id": job.id})
        try:
            sent = await self.courier.deliver(job, rendered)
        except RefusedError as error:
            return Gone(f"Discord refused even a text answer ({error.status} {error.code})")
        except CourierError as error:
            return _outcome(error)
        return Delivered("text", sent.message_id)

    async def deliver_notice(self, job: Job) -> Outcome:
        try:
            sent: Sent = await self.courier.deliver(job, render.notice(job))
        except RefusedError as error:
            return Gone(f"Discord refused the notice ({error.status} {error.code})")
        except CourierError as error:
            return _outcome(error)
        return Delivered(sent.how, sent.message_id)

    async def recover_reply(self, job: Job) -> RecoveredReply:
        return await self.courier.original(job)

    def _permissions(self, job: Job) -> discord.Permissions | None:
        """The bot's permissions in the job's channel from the gateway cache; None when not cached (try anyway)."""
        guild = self.bot.get_guild(job.origin.guild_id or 0)
        if guild is None or job.origin.channel_id is None:
            return None
        channel = guild.get_channel_or_thread(job.origin.channel_id)
        if channel is None:
            return None
        return channel.permissions_for(guild.me)

    def _missing(self, job: Job) -> list[str]:
        permissions = self._permissions(job)
        if permissions is None:
            return []
        names = {"attach_files": "Attach Files", "embed_links": "Embed Links"}
        return [label for name, label in names.items() if not getattr(permissions, name)]


def _outcome(error: CourierError) -> Outcome:
    if isinstance(error, ReplyGoneError):
        return Gone(str(error), channel=error.channel)
    if isinstance(error, UnavailableError):
        return Retry(str(error), error.retry_after)
    return Retry(str(error))


class DeliveryCog(commands.Cog, name="Delivery"):
    """Status edits from job events, what Discord says is gone told to the manager, and one notice per server's
    admins when RunComfy is out of credit."""

    def __init__(self, bot: discord.Client, jobs: JobManager, courier: ReplyCourier) -> None:
        self.bot = bot
        self.jobs = jobs
        self.courier = courier
        self._unsubscribe = jobs.subscribe(self.on_job_event)
        self._told: set[int] = set()  # servers whose admins know the credit ran out (until a job is accepted)

    async def cog_unload(self) -> None:
        self._unsubscribe()
        await self.courier.close()

    def on_job_event(self, event: JobEvent) -> None:
        job = event.job
        if job.origin.channel_id is None:
            return  # not a Discord job (the CLI shares the store)
        if isinstance(event, JobWaiting):
            self.courier.show(job, render.waiting_for_slot(job, event.position, event.reason))
            if event.reason is WaitReason.CREDIT and job.origin.guild_id not in self._told:
                self._told.add(job.origin.guild_id or 0)
                self.jobs.spawn(self._tell_admins(job), f"out-of-credit-{job.origin.guild_id}")
        elif isinstance(event, JobSubmitting):
            self.courier.show(job, render.waiting(job))
        elif isinstance(event, JobQueued):
            self._told.clear()  # accepted again: a later outage is news again
            self.courier.show(job, render.queued(job, event.position))
        elif isinstance(event, JobRunning):
            self.courier.show(job, render.generating(job, event.eta, overdue=event.overdue))
        elif isinstance(event, JobDelivered | JobUndeliverable | NoticeShown | NoticeLost) or (
            # Ended with no notice owed (its reply is gone, maybe found so by an edit landing after the end):
            # nothing more will ever be edited in.
            isinstance(event, ReplyGone | JobCancelled | JobFailed) and job.state.is_final and not job.notice_pending
        ):
            self.courier.forget(job.id)
        elif isinstance(event, ReplyGone):
            self.courier.silence(job.id)

    async def _tell_admins(self, job: Job) -> None:
        """Once per outage and server: a DM to the server's owner, or, when their DMs are closed, a message in the
        channel where a member is waiting (mentioning nobody)."""
        guild = self.bot.get_guild(job.origin.guild_id or 0)
        if guild is None:
            return
        if guild.owner_id and await self._direct_message(guild.owner_id, guild.name):
            return
        channel = self.bot.get_partial_messageable(job.origin.channel_id or 0)
        try:
            await channel.send(render.OUT_OF_CREDIT_NOTICE, allowed_mentions=render.NO_MENTIONS)
        except discord.HTTPException as error:
            log.warning("server %d: could not tell its admins about the credit (%d)", guild.id, error.status)

    async def _direct_message(self, user_id: int, server: str) -> bool:
        try:
            user = await self.bot.fetch_user(user_id)
            await user.send(f"{render.OUT_OF_CREDIT_NOTICE}\n-# Server: {discord.utils.escape_markdown(server)}")
        except discord.HTTPException:
            return False
        return True

    @commands.Cog.listener()
    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        await self.jobs.departures.reply_deleted(payload.message_id)

    @commands.Cog.listener()
    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        for message_id in payload.message_ids:
            await self.jobs.departures.reply_deleted(message_id)

    @commands.Cog.listener()
    async def on_guild_channel_delete(self, channel: discord.abc.GuildChannel) -> None:
        await self.jobs.departures.channel_gone(channel.id)

    @commands.Cog.listener()
    async def on_raw_thread_delete(self, payload: discord.RawThreadDeleteEvent) -> None:
        await self.jobs.departures.channel_gone(payload.thread_id)

    @commands.Cog.listener()
    async def on_guild_remove(self, guild: discord.Guild) -> None:
        await self.jobs.departures.guild_gone(guild.id)
