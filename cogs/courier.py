"""Every message the bot writes for a job, within Discord's rate limits; one attempt per call.

Passing states (`show`) are coalesced: while an edit waits for its turn, a
newer state replaces the older one, so a member sees the latest without a
burst of edits, and a passing edit that fails is simply dropped (the next
state or the final delivery follows). Edits through the channel route share a
per-channel budget below Discord's observed 5 per 5 s, and edits through an
interaction token a per-token budget below its 5 per 2 s (aiolimiter,
capacity 1, so no burst can overrun a fixed window).

A final edit (`deliver`) makes one attempt and says what happened through its
exceptions, so the job manager's delivery stage decides about retries (for
hours, across restarts). It tries the interaction token (valid 15 minutes,
and it works before the reply's id is known), then the channel route with the
bot token, and only when the job has no message at all a new message, posted
with Discord's `nonce` + `enforce_nonce` (docs/discord-platform.md, NONCE), so
a retry after a lost answer gets the first message back instead of a second
one. A retry of an image reads the reply first (through the token while it
lives, else through the channel) and leaves it alone if the image is there.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import aiohttp
import discord
from aiolimiter import AsyncLimiter

from bot.clock import Clock
from bot.images import EncodedImage
from bot.jobs import RecoveredReply, Reply
from cogs.render import NO_MENTIONS, Rendered, requester, starting
from storage.models import Job

log = logging.getLogger(__name__)
T = TypeVar("T")

TOKEN_MARGIN = timedelta(seconds=30)  # stop using a token a little before Discord does
TOKEN_ROUTE_SECONDS = 5.0
UNKNOWN_CHANNEL = 10003
UNKNOWN_MESSAGE = 10008
MISSING_ACCESS = 50001
MISSING_PERMISSIONS = 50013
TOKEN_DEAD_CODES = frozenset({50027, 10015, 10062})
# Discord's name for an interaction's first response in the webhook message routes; used when a restart
# came between the acknowledgement and writing down the reply's message id.
ORIGINAL_RESPONSE: Any = "@original"
ALREADY_SHOWN = "already_shown"  # the reply had the image before the job could be marked delivered


class CourierError(Exception):
    """Discord did not take the message; the subclass says whether trying again can help."""


class ReplyGoneError(CourierError):
    """The reply (or its whole channel) is gone, or the bot cannot see the channel any more: send nothing more."""

    def __init__(self, reason: str, *, channel: bool = False) -> None:
        super().__init__(reason)
        self.channel = channel


class RefusedError(CourierError):
    """Discord refused this content (a missing permission, a file too large): the same message will fail again."""

    def __init__(self, status: int, code: int) -> None:
        super().__init__(f"Discord refused the message ({status} {code})")
        self.status = status
        self.code = code


class UnavailableError(CourierError):
    """Discord could not be reached or answered 5xx/429: a later try may work."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


@dataclass
class Attachment:
    image: EncodedImage
    filename: str
    alt_text: str

    def file(self) -> discord.File:
        return discord.File(io.BytesIO(self.image.data), filename=self.filename, description=self.alt_text)


@dataclass(frozen=True, slots=True)
class Sent:
    how: str  # interaction, channel_edit, new_message, already_shown
    message_id: int | None = None  # set when a new message now shows the job


class ReplyCourier:
    """One per bot: owns every edit and post of job messages."""

    def __init__(
        self,
        client: discord.Client,
        clock: Clock,
        *,
        on_gone: Callable[[Job, bool], None] = lambda job, channel: None,
        channel_interval: float = 1.25,
        token_interval: float = 0.5,
    ) -> None:
        self.client = client
        self.clock = clock
        self.on_gone = on_gone
        self.channel_interval = channel_interval
        self.token_interval = token_interval
        self._channel_limiters: dict[int, AsyncLimiter] = {}
        self._token_limiters: dict[int, AsyncLimiter] = {}
        self._pending: dict[int, tuple[Job, Rendered]] = {}
        self._workers: dict[int, asyncio.Task[None]] = {}
        self._final: set[int] = set()
        self._dead_tokens: set[int] = set()

    # -- passing states ------------------------------------------------------------

    def show(self, job: Job, rendered: Rendered) -> None:
        """Show a passing state; returns at once, and a newer state overtakes this one if it is still waiting."""
        if job.id in self._final or job.deleted_at is not None or job.origin.channel_id is None:
            return
        self._pending[job.id] = (job, rendered)
        if job.id not in self._workers:
            self._workers[job.id] = asyncio.create_task(self._work(job.id), name=f"reply-{job.id}")

    async def _work(self, job_id: int) -> None:
        try:
            while (pending := self._pending.pop(job_id, None)) is not None:
                job, rendered = pending
                try:
                    await self._edit(job, rendered, ())
                except ReplyGoneError as error:
                    log.info("job %d: %s", job_id, error, extra={"job_id": job_id})
                    self._final.add(job_id)
                    self.on_gone(job, error.channel)
                except CourierError as error:
                    log.info("job %d: status not shown: %s", job_id, error, extra={"job_id": job_id})
        finally:
            self._workers.pop(job_id, None)

    def silence(self, job_id: int) -> None:
        """The job's reply is gone: drop its waiting edit and send none after it."""
        self._final.add(job_id)
        self._pending.pop(job_id, None)

    def forget(self, job_id: int) -> None:
        """The job is over: drop what was kept for its edits."""
        self._final.discard(job_id)
        self._pending.pop(job_id, None)
        self._token_limiters.pop(job_id, None)
        self._dead_tokens.discard(job_id)

    async def close(self) -> None:
        for task in list(self._workers.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- final states ----------------------------------------------------------------

    async def deliver(self, job: Job, rendered: Rendered, attachments: Sequence[Attachment] = ()) -> Sent:
        """Show the job's final state, once (its images, when given, in one message): one attempt across the routes;
        CourierError says why not."""
        self._final.add(job.id)
        self._pending.pop(job.id, None)
        running = self._workers.get(job.id)
        if running is not None:  # a passing edit in flight must not land after the final one
            await asyncio.gather(running, return_exceptions=True)
        if attachments and job.delivery_attempts > 1 and await self._shown_already(job, attachments[0]):
            return Sent(ALREADY_SHOWN)
        return await self._edit(job, rendered, attachments)

    async def post(
        self, channel_id: int, rendered: Rendered, *, nonce: str | None, reference: int | None = None
    ) -> int:
        """A new message in the channel (a reroll's first message); its id. The nonce makes a repeat return the
        first message instead of posting a second."""
        message = await self._guard(self._post(channel_id, rendered, (), nonce=nonce, reference=reference))
        return message.id

    async def original(self, job: Job) -> RecoveredReply:
        """Does the job's reply exist? Asked after a restart for a job whose reply id was never written down.

        An acknowledged interaction's token works for 15 minutes; one never
        acknowledged is refused at once (404 within its 3 seconds, 401 after).
        A reroll has no token: its first message is posted again with the
        job's nonce, which returns the message if it was posted already.
        """
        origin = job.origin
        if origin.interaction_token is None or origin.application_id is None:
            if origin.channel_id is None:
                return RecoveredReply(Reply.NEVER)
            try:
                message_id = await self.post(origin.channel_id, starting(job), nonce=job.post_nonce)
            except CourierError:
                return RecoveredReply(Reply.NEVER)
            return RecoveredReply(Reply.FOUND, message_id)
        if not self._token_alive(job):
            return RecoveredReply(Reply.UNKNOWN)
        try:
            reply = await self._read_by_token(job)
        except discord.HTTPException as error:
            if error.status in (401, 404):
                return RecoveredReply(Reply.NEVER)
            return RecoveredReply(Reply.UNKNOWN)
        except (aiohttp.ClientError, TimeoutError):
            return RecoveredReply(Reply.UNKNOWN)
        return RecoveredReply(Reply.FOUND, reply.id)

    # -- routes ------------------------------------------------------------------------

    async def _edit(self, job: Job, rendered: Rendered, attachments: Sequence[Attachment]) -> Sent:
        origin = job.origin
        can_edit = origin.channel_id is not None and origin.message_id is not None
        if self._token_alive(job):
            try:
                # discord.py's webhook requests retry 5xx on their own for ~25 s: bounded here, so a Discord
                # outage costs one attempt a few seconds, and the channel route gets its turn.
                async with asyncio.timeout(TOKEN_ROUTE_SECONDS):
                    sent = await self._guard(self._by_token(job, rendered, attachments))
            except (UnavailableError, TimeoutError) as error:
                if not can_edit:
                    raise (
                        error if isinstance(error, UnavailableError) else UnavailableError("Discord timed out")
                    ) from None
                log.info("job %d: interaction route unavailable (%s); trying the channel route", job.id, error)
            else:
                if sent is not None:
                    return sent
        final = bool(attachments) or job.state.is_final
        if can_edit:
            try:
                await self._guard(self._by_channel(job, rendered, attachments))
            except RefusedError as error:
                if not final or error.status != 403 or error.code == MISSING_PERMISSIONS:
                    raise
                # The reply cannot be edited for a reason a new message does not share: post one instead.
                log.info(
                    "job %d: the reply cannot be edited (%s); posting anew", job.id, error, extra={"job_id": job.id}
                )
            else:
                return Sent("channel_edit")
        if final:
            # No message to edit (the token died before the reply's id was written): a new message, once.
            nonce = f"{job.post_nonce}d" if job.post_nonce else None
            if attachments:  # a result nobody would see otherwise: ping the member who asked
                rendered = Rendered(
                    f"{requester(job)} your image is ready.\n{rendered.content}"[:2000],
                    rendered.embed,
                    rendered.buttons,
                )
            message = await self._guard(
                self._post(origin.channel_id or 0, rendered, attachments, nonce=nonce, mention=origin.user_id)
            )
            return Sent("new_message", message.id)
        raise UnavailableError("the job has no message to update yet")

    async def _by_token(self, job: Job, rendered: Rendered, attachments: Sequence[Attachment]) -> Sent | None:
        """The reply through the interaction token: its own rate-limit bucket, and it works even before the reply's
        id is known. None when the token turns out dead (the channel route is next)."""
        origin = job.origin
        await self._turn(self._token_limiters, job.id, self.token_interval)
        try:
            await self._webhook(job).edit_message(
                origin.message_id or ORIGINAL_RESPONSE, **_parts(rendered, attachments)
            )
        except discord.HTTPException as error:
            if error.status == 401 or error.code in TOKEN_DEAD_CODES:
                self._dead_tokens.add(job.id)
                return None
            raise
        return Sent("interaction")

    async def _read_by_token(self, job: Job) -> discord.WebhookMessage:
        """The reply read through the interaction token: it needs no permission in the channel (not even Read
        Message History), and it finds the reply before its id is known (`@original`)."""
        return await self._webhook(job).fetch_message(job.origin.message_id or ORIGINAL_RESPONSE)

    def _webhook(self, job: Job) -> discord.Webhook:
        """The job's interaction token as discord.py's webhook, for the routes that use it; callers check
        `_token_alive` first."""
        origin = job.origin
        return discord.Webhook.partial(origin.application_id or 0, origin.interaction_token or "", client=self.client)

    async def _by_channel(self, job: Job, rendered: Rendered, attachments: Sequence[Attachment]) -> None:
        origin = job.origin
        channel_id = origin.channel_id or 0
        message = self.client.get_partial_messageable(channel_id).get_partial_message(origin.message_id or 0)
        await self._turn(self._channel_limiters, channel_id, self.channel_interval)
        await message.edit(**_parts(rendered, attachments))

    async def _post(
        self,
        channel_id: int,
        rendered: Rendered,
        attachments: Sequence[Attachment],
        *,
        nonce: str | None,
        reference: int | None = None,
        mention: int | None = None,
    ) -> discord.Message:
        """A fresh message; with `mention`, it pings only that member (a result nobody would otherwise see)."""
        channel = self.client.get_partial_messageable(channel_id)
        kwargs: dict[str, Any] = {
            "content": rendered.content,
            "embed": rendered.embed,
            "view": rendered.view(),
            "allowed_mentions": NO_MENTIONS,
        }
        if attachments:
            kwargs["files"] = [attachment.file() for attachment in attachments]
        if mention is not None:
            kwargs["allowed_mentions"] = discord.AllowedMentions(
                everyone=False, roles=False, users=[discord.Object(mention)]
            )
        if nonce is not None:
            kwargs["nonce"] = nonce  # discord.py sends enforce_nonce with it
        if reference is not None:
            kwargs["reference"] = discord.MessageReference(
                message_id=reference, channel_id=channel_id, fail_if_not_exists=False
            )
        await self._turn(self._channel_limiters, channel_id, self.channel_interval)
        return await channel.send(**kwargs)

    async def _guard(self, call: Awaitable[T]) -> T:
        """Await one Discord call, turning its failures into the courier's three kinds."""
        try:
            return await call
        except discord.RateLimited as error:
            raise UnavailableError("rate limited", error.retry_after) from None
        except discord.HTTPException as error:
            if error.code == UNKNOWN_MESSAGE:
                raise ReplyGoneError("the reply was deleted") from None
            if error.code == UNKNOWN_CHANNEL:
                raise ReplyGoneError("the channel was deleted", channel=True) from None
            if error.code == MISSING_ACCESS:
                raise ReplyGoneError("the bot can no longer see that channel", channel=True) from None
            if error.status >= 500 or error.status == 429:
                raise UnavailableError(f"Discord answered {error.status}") from None
            raise RefusedError(error.status, error.code) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            raise UnavailableError(f"Discord unreachable ({type(error).__name__})") from None

    def _token_alive(self, job: Job) -> bool:
        origin = job.origin
        return (
            job.id not in self._dead_tokens
            and origin.interaction_token is not None
            and origin.application_id is not None
            and origin.token_expires_at is not None
            and origin.token_expires_at - TOKEN_MARGIN > self.clock.now()
        )

    async def _turn(self, limiters: dict[int, AsyncLimiter], key: int, interval: float) -> None:
        """Wait until one more request on this bucket keeps it under Discord's limit."""
        limiter = limiters.get(key)
        if limiter is None:
            limiter = limiters[key] = AsyncLimiter(1, interval)
        await limiter.acquire()

    async def _shown_already(self, job: Job, attachment: Attachment) -> bool:
        """Whether the reply has this job's image already: a previous attempt whose answer was lost, or a process
        killed between Discord's answer and writing "delivered", got it there; editing again would show the
        member the same result twice. `_current_reply` says how the reply is read, and the one case (no live token,
        no Read Message History) where it cannot be and the edit goes ahead."""
        message = await self._current_reply(job)
        if message is None:
            return False
        stem = attachment.filename.rsplit(".", 1)[0] + "."
        if not any(existing.filename.startswith(stem) for existing in message.attachments):
            return False
        log.info("job %d: the reply already shows the image", job.id, extra={"job_id": job.id})
        return True

    async def _current_reply(self, job: Job) -> discord.Message | None:
        """The reply as Discord has it now, or None when it is gone or out of reach (the edit itself finds out
        which, and says so). UnavailableError when Discord cannot tell now: editing blindly could show the image
        twice, so the attempt waits and looks again.

        While the interaction token lives, the reply is read through it, which needs no permission in the
        channel. When that route cannot answer, and without a live token (a reroll's message has none; tokens
        last 15 minutes), it is read through the channel, which needs Read Message History: where the bot lacks
        that (403) nothing can tell, and the edit goes ahead. That is the one case left where a lost answer can
        show the image twice.
        """
        origin = job.origin
        if self._token_alive(job):
            try:
                # Bounded like the edits: discord.py retries 5xx on the token routes for ~25 s by itself.
                async with asyncio.timeout(TOKEN_ROUTE_SECONDS):
                    return await self._read_by_token(job)
            except discord.HTTPException as error:
                if error.code == UNKNOWN_MESSAGE:
                    return None  # the reply was deleted; another 404 (a token Discord no longer knows) is no answer
                reason = f"Discord answered {error.status}"
            except (aiohttp.ClientError, TimeoutError) as error:
                reason = type(error).__name__
            log.info(
                "job %d: cannot read the reply through its token (%s); trying the channel route",
                job.id,
                reason,
                extra={"job_id": job.id},
            )
        if not (origin.channel_id and origin.message_id):
            return None
        channel = self.client.get_partial_messageable(origin.channel_id)
        try:
            return await channel.fetch_message(origin.message_id)
        except (discord.NotFound, discord.Forbidden):
            return None
        except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as error:
            raise UnavailableError(f"could not look at the reply first ({type(error).__name__})") from None


def _parts(rendered: Rendered, attachments: Sequence[Attachment]) -> dict[str, Any]:
    """An edit's fields; `attachments` lists exactly what the message keeps (Discord drops unlisted files)."""
    return {
        "content": rendered.content,
        "embed": rendered.embed,
        "view": rendered.view(),
        "allowed_mentions": NO_MENTIONS,
        "attachments": [attachment.file() for attachment in attachments],
    }
