"""Keeps each job's reply message showing its newest state, within Discord's rate limits.

Status changes are coalesced: while an edit waits for its turn, a newer state
replaces the older one, so a member sees the latest without a burst of edits.
Edits through the channel route share a per-channel budget below Discord's
observed 5 per 5 s, and edits through an interaction token a per-token budget
below its 5 per 2 s (aiolimiter, capacity 1, so no burst can overrun a fixed
window), so many jobs in one channel queue politely instead of meeting 429s.
The final edit (image, failure, cancellation) is never dropped: it waits its
turn and tries, in order, the interaction token (valid 15 minutes), the
channel route with the bot token, and a new message mentioning the requester.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import discord
from aiolimiter import AsyncLimiter

from bot.images import EncodedImage
from cogs.render import NO_MENTIONS, Rendered, requester
from storage.models import Job

log = logging.getLogger(__name__)

TOKEN_MARGIN = timedelta(seconds=30)  # stop using a token a little before Discord does
UNKNOWN_MESSAGE = 10008
UNKNOWN_CHANNEL = 10003
TOKEN_DEAD_CODES = {50027, 10015, 10062}
# Discord's name for an interaction's first response in the webhook message routes; used when a restart
# came between the acknowledgement and writing down the reply's message id.
ORIGINAL_RESPONSE: Any = "@original"
ALREADY_SHOWN = "already_shown"  # the reply had the image before this process could mark the job delivered


class UndeliverableError(Exception):
    """The reply cannot be shown any more (deleted message or channel, no access); the text says why."""


@dataclass
class Attachment:
    image: EncodedImage
    filename: str
    alt_text: str

    def file(self) -> discord.File:
        return discord.File(io.BytesIO(self.image.data), filename=self.filename, description=self.alt_text)


@dataclass
class _Edit:
    job: Job
    rendered: Rendered
    final: bool
    attachment: Attachment | None = None
    done: asyncio.Future[str] | None = field(default=None)


class ReplyCourier:
    """One per bot: owns every edit of job replies."""

    def __init__(
        self,
        client: discord.Client,
        *,
        channel_interval: float = 1.25,
        token_interval: float = 0.5,
        attempts: int = 4,
    ) -> None:
        self.client = client
        self.channel_interval = channel_interval
        self.token_interval = token_interval
        self.attempts = attempts
        self._channel_limiters: dict[int, AsyncLimiter] = {}
        self._token_limiters: dict[int, AsyncLimiter] = {}
        self._pending: dict[int, _Edit] = {}
        self._workers: dict[int, asyncio.Task[None]] = {}
        self._finalised: set[int] = set()
        self._interactions: dict[int, discord.Interaction[Any]] = {}
        self._dead_tokens: set[int] = set()

    def remember(self, job_id: int, interaction: discord.Interaction[Any]) -> None:
        """Use this interaction's token for the job's edits while it is valid (no channel budget needed)."""
        self._interactions[job_id] = interaction

    def show(self, job: Job, rendered: Rendered) -> None:
        """Show a passing state; returns at once, and a newer state overtakes this one if it is still waiting."""
        if job.id in self._finalised:
            return
        self._enqueue(_Edit(job, rendered, final=False))

    async def deliver(self, job: Job, rendered: Rendered, attachment: Attachment | None = None) -> str:
        """Show the final state and wait until Discord has it; returns how ("interaction", "channel_edit",
        "new_message"), or raises UndeliverableError."""
        self._finalised.add(job.id)
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._enqueue(_Edit(job, rendered, final=True, attachment=attachment, done=done))
        try:
            return await done
        finally:
            self._finalised.discard(job.id)
            self._interactions.pop(job.id, None)
            self._token_limiters.pop(job.id, None)
            self._dead_tokens.discard(job.id)

    async def close(self) -> None:
        for task in list(self._workers.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _enqueue(self, edit: _Edit) -> None:
        replaced = self._pending.get(edit.job.id)
        if replaced is not None and replaced.final and not edit.final:
            return
        self._pending[edit.job.id] = edit
        if edit.job.id not in self._workers:
            self._workers[edit.job.id] = asyncio.create_task(self._work(edit.job.id), name=f"reply-{edit.job.id}")

    async def _work(self, job_id: int) -> None:
        try:
            while (edit := self._pending.pop(job_id, None)) is not None:
                try:
                    how = await self._send(edit)
                except UndeliverableError as error:
                    if edit.done is not None and not edit.done.done():
                        edit.done.set_exception(error)
                    else:
                        log.info("job %d: status not shown: %s", job_id, error, extra={"job_id": job_id})
                else:
                    if edit.done is not None and not edit.done.done():
                        edit.done.set_result(how)
        finally:
            self._workers.pop(job_id, None)

    async def _turn(self, limiters: dict[int, AsyncLimiter], key: int, interval: float) -> None:
        """Wait until one more request on this bucket keeps it under Discord's limit."""
        limiter = limiters.get(key)
        if limiter is None:
            limiter = limiters[key] = AsyncLimiter(1, interval)
        await limiter.acquire()

    async def _send(self, edit: _Edit) -> str:
        for attempt in range(self.attempts):
            try:
                if edit.attachment is not None and (attempt > 0 or edit.job.id not in self._interactions):
                    shown = await self._shown_already(edit, edit.attachment)
                    if shown is not None:
                        return shown
                return await self._try_routes(edit)
            except discord.HTTPException as error:
                if error.status < 500 and error.status != 429:
                    raise UndeliverableError(f"Discord refused the message ({error.status} {error.code})") from None
                log.warning("job %d: Discord answered %d, retrying", edit.job.id, error.status)
            except (discord.RateLimited, aiohttp.ClientError, TimeoutError) as error:
                log.warning("job %d: Discord unreachable (%s), retrying", edit.job.id, type(error).__name__)
            await asyncio.sleep(min(2.0 * 2**attempt, 30.0))
        raise UndeliverableError("Discord kept failing")

    async def _try_routes(self, edit: _Edit) -> str:
        job = edit.job
        kwargs: dict[str, Any] = {
            "content": edit.rendered.content,
            "embed": edit.rendered.embed,
            "view": edit.rendered.view(),
            "allowed_mentions": NO_MENTIONS,
            "attachments": [edit.attachment.file()] if edit.attachment else [],
        }
        interaction = self._interactions.get(job.id)
        if interaction is not None and interaction.expires_at - TOKEN_MARGIN > datetime.now(UTC):
            await self._turn(self._token_limiters, job.id, self.token_interval)
            try:
                await interaction.edit_original_response(**kwargs)
            except discord.HTTPException as error:
                if error.status != 401 and error.code not in TOKEN_DEAD_CODES:
                    self._check_gone(error)
                    raise
                self._interactions.pop(job.id, None)  # token expired early: the channel route still works
                self._dead_tokens.add(job.id)
            else:
                return "interaction"
        elif interaction is None and self._stored_token_alive(job):
            # After a restart the reply is still reachable through the token written with the job: its own
            # rate-limit bucket, and it works even if the process died before the message id was written.
            await self._turn(self._token_limiters, job.id, self.token_interval)
            webhook = discord.Webhook.partial(
                job.origin.application_id or 0, job.origin.interaction_token or "", client=self.client
            )
            try:
                await webhook.edit_message(job.origin.message_id or ORIGINAL_RESPONSE, **kwargs)
            except discord.HTTPException as error:
                if error.status != 401 and error.code not in TOKEN_DEAD_CODES:
                    self._check_gone(error)
                    raise
                self._dead_tokens.add(job.id)
            else:
                return "interaction"
        if job.origin.channel_id and job.origin.message_id:
            message = self.client.get_partial_messageable(job.origin.channel_id).get_partial_message(
                job.origin.message_id
            )
            if edit.attachment:
                kwargs["attachments"] = [edit.attachment.file()]  # a File is read once per request
            await self._turn(self._channel_limiters, job.origin.channel_id, self.channel_interval)
            try:
                await message.edit(**kwargs)
            except discord.HTTPException as error:
                self._check_gone(error)
                if not (edit.final and isinstance(error, discord.Forbidden)):
                    raise
            else:
                return "channel_edit"
        if edit.final and job.origin.channel_id:
            return await self._post_new(edit, kwargs)
        raise UndeliverableError("the job has no message to update")

    async def _post_new(self, edit: _Edit, kwargs: dict[str, Any]) -> str:
        """Last resort: a fresh message that pings only the member who asked."""
        job = edit.job
        channel = self.client.get_partial_messageable(job.origin.channel_id or 0)
        kwargs.pop("attachments")
        if edit.attachment:
            kwargs["file"] = edit.attachment.file()
        lead = f"{requester(job)} your image is ready.\n" if edit.attachment else ""  # a failure says so itself
        kwargs["content"] = f"{lead}{edit.rendered.content}"[:2000]
        kwargs["allowed_mentions"] = discord.AllowedMentions(
            everyone=False, roles=False, users=[discord.Object(job.origin.user_id or 0)]
        )
        await self._turn(self._channel_limiters, job.origin.channel_id or 0, self.channel_interval)
        try:
            await channel.send(**kwargs)
        except discord.HTTPException as error:
            self._check_gone(error)
            if isinstance(error, discord.Forbidden):
                raise UndeliverableError("the bot may no longer post in that channel") from None
            raise
        return "new_message"

    def _stored_token_alive(self, job: Job) -> bool:
        origin = job.origin
        return (
            job.id not in self._dead_tokens
            and origin.interaction_token is not None
            and origin.application_id is not None
            and origin.token_expires_at is not None
            and origin.token_expires_at - TOKEN_MARGIN > datetime.now(UTC)
        )

    async def _shown_already(self, edit: _Edit, attachment: Attachment) -> str | None:
        """ALREADY_SHOWN when the reply has this job's image already, else None.

        A previous attempt whose answer was lost, or a process killed between
        Discord's answer and writing "delivered", got it there; editing again
        would show the member the same result twice.
        """
        job = edit.job
        if not (job.origin.channel_id and job.origin.message_id):
            return None
        stem = attachment.filename.rsplit(".", 1)[0] + "."
        channel = self.client.get_partial_messageable(job.origin.channel_id)
        try:
            message = await channel.fetch_message(job.origin.message_id)
        except discord.HTTPException:
            return None  # cannot tell: the edit itself finds out what is wrong
        if not any(existing.filename.startswith(stem) for existing in message.attachments):
            return None
        log.info("job %d: the reply already shows the image", job.id, extra={"job_id": job.id})
        return ALREADY_SHOWN

    @staticmethod
    def _check_gone(error: discord.HTTPException) -> None:
        if error.code == UNKNOWN_MESSAGE:
            raise UndeliverableError("the reply was deleted") from None
        if error.code == UNKNOWN_CHANNEL:
            raise UndeliverableError("the channel was deleted") from None
