"""Delivery, a stage of the job: the finished image (or the notice of a failure or cancellation) reaches the
member exactly once, however long Discord is down and however often the bot restarts meanwhile.

`completed → delivering → delivered | undeliverable`; a failed or cancelled
job keeps `deliver_at` set until its notice was shown. Before each attempt the
next attempt's time is written (capped exponential backoff with full jitter,
tenacity's `wait_random_exponential`), so a crash, a timeout or a bug during
the attempt leaves the job scheduled, never stranded. Attempts go on for
`retry_window` (DELIVERY_RETRY_HOURS) from the moment the image was made.

This module knows nothing of Discord: a `Destination` (the Discord cog, or the
CLI's file writer) makes one attempt and says how it went: `Delivered`,
`Retry` (Discord unavailable, rate limited) or `Gone` (the reply, channel or
server is gone: no further sends). Delivery runs in its own worker, keyed by
channel, so it never holds a poll slot and one slow channel holds at most
`per_channel` of its slots.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from tenacity import AsyncRetrying, RetryCallState, wait_random_exponential

from bot.clock import Clock
from bot.download import DownloadedImage
from bot.jobs.events import (
    DeliveryDelayed,
    JobDelivered,
    JobDelivering,
    JobUndeliverable,
    NoticeLost,
    NoticeShown,
)
from bot.jobs.ledger import Ledger
from bot.jobs.prices import PriceBook
from bot.jobs.worker import Worker
from bot.runcomfy import RunComfyClient, RunComfyError
from storage.models import MADE_STATES, FailureKind, Job, JobState

log = logging.getLogger(__name__)

ATTEMPT_TIMEOUT = 120.0  # one attempt (download, re-encode, Discord) that takes longer is tried again later
CACHE_BYTES = 256 * 1024 * 1024  # downloaded images kept between attempts, so a retry does not download again
_BACKOFF = wait_random_exponential(multiplier=2.0, min=1.0, max=300.0)


@dataclass(frozen=True, slots=True)
class Delivered:
    how: str  # interaction, channel_edit, new_message, text, file, already_shown
    message_id: int | None = None  # the message now showing the job, when it changed (a new message was posted)


@dataclass(frozen=True, slots=True)
class Retry:
    reason: str
    after: float | None = None  # seconds the platform asked us to wait, if it said


@dataclass(frozen=True, slots=True)
class Gone:
    """Nowhere to deliver to any more; `channel` when the whole channel is unusable, not just the reply."""

    reason: str
    channel: bool = False


Outcome = Delivered | Retry | Gone
Images = tuple[DownloadedImage, ...]


class Reply(StrEnum):
    FOUND = "found"  # the reply exists (its id comes with it)
    NEVER = "never"  # the platform says it was never made: nobody saw anything
    UNKNOWN = "unknown"  # cannot tell


@dataclass(frozen=True, slots=True)
class RecoveredReply:
    state: Reply
    message_id: int | None = None


class Destination(Protocol):
    """Where a job's results go (Discord, a file); one attempt per call, never a retry loop of its own."""

    async def deliver_images(self, job: Job, images: Sequence[DownloadedImage]) -> Outcome:
        """The job's images (one, or a gallery of several), in one message."""
        ...

    async def deliver_notice(self, job: Job) -> Outcome: ...

    async def recover_reply(self, job: Job) -> RecoveredReply:
        """After a restart, for a waiting job whose reply was never written down: does it exist?"""
        ...


def backoff(attempt: int) -> float:
    """Seconds before attempt `attempt + 1`: full jitter under 2 s × 2^attempt, capped at 5 minutes."""
    state = RetryCallState(AsyncRetrying(), None, (), {})
    state.attempt_number = attempt
    return float(_BACKOFF(state))


class Delivery:
    def __init__(
        self,
        ledger: Ledger,
        client: RunComfyClient,
        clock: Clock,
        prices: PriceBook,
        *,
        retry_window: float,
        on_channel_gone: Callable[[int, str], None],
        concurrency: int = 32,
        per_channel: int = 3,
        downloads: int = 4,
    ) -> None:
        self.ledger = ledger
        self.client = client
        self.clock = clock
        self.prices = prices
        self.retry_window = timedelta(seconds=retry_window)
        self._on_channel_gone = on_channel_gone
        self.destination: Destination | None = None
        self.worker = Worker("deliver", clock, self.step, concurrency=concurrency, per_key=per_channel)
        self._downloads = asyncio.Semaphore(downloads)
        self._images: OrderedDict[int, Images] = OrderedDict()
        self._fetching: dict[int, asyncio.Task[Images]] = {}

    def schedule(self, job: Job) -> None:
        if job.deliver_at is not None:
            self.worker.schedule(job.id, job.deliver_at, key=job.origin.channel_id or ("job", job.id))

    def prefetch(self, job: Job) -> None:
        """Start downloading a finished job's images now: result URLs may not live long, and a delivery can wait
        behind others of its channel (or a Discord outage) far longer than a download should."""
        if job.images and job.id not in self._images and job.id not in self._fetching:
            task = asyncio.create_task(self._download(job.images), name=f"download-{job.id}")
            self._fetching[job.id] = task
            task.add_done_callback(lambda done: self._fetched(job.id, done))

    async def _image(self, job: Job) -> Images:
        """The job's images: the downloads already under way, or new ones."""
        if not job.images:
            raise RuntimeError(f"job {job.id} was made without a result URL")
        self.prefetch(job)
        return await asyncio.shield(self._fetching[job.id])

    async def _download(self, urls: Sequence[str]) -> Images:
        """Every image of a job, each download taking one of the `downloads` places (a gallery of four does not
        hold four places while it waits for the first)."""

        async def one(url: str) -> DownloadedImage:
            async with self._downloads:
                return await self.client.download_image(url)

        return tuple(await asyncio.gather(*(one(url) for url in urls)))

    def _fetched(self, job_id: int, task: asyncio.Task[Images]) -> None:
        if self._fetching.get(job_id) is task:
            del self._fetching[job_id]
        if not task.cancelled() and task.exception() is None:
            self._remember(job_id, task.result())

    async def close(self) -> None:
        for task in list(self._fetching.values()):
            task.cancel()
        await asyncio.gather(*self._fetching.values(), return_exceptions=True)

    def forget(self, job_id: int) -> None:
        self.worker.discard(job_id)
        self._images.pop(job_id, None)
        fetching = self._fetching.pop(job_id, None)
        if fetching is not None:
            fetching.cancel()

    async def step(self, job_id: int) -> None:
        job = await self.ledger.store.get(job_id)
        if job is None or not job.owes_delivery or job.deliver_at is None or not self.ledger.mine(job):
            self.forget(job_id)  # delivered, or another process holds it now
            return
        now = self.clock.now()
        if job.deliver_at > now:
            self.schedule(job)  # another attempt moved it on meanwhile
            return
        if self.destination is None:
            raise RuntimeError("delivery started without a destination")
        attempt = job.delivery_attempts + 1
        # Written before the attempt: whatever happens during it, the job comes back at `retry_at`.
        retry_at = now + timedelta(seconds=backoff(attempt))
        if job.state in MADE_STATES:
            claimed = await self.ledger.move(
                job.id,
                JobState.DELIVERING,
                expect=MADE_STATES,
                event=lambda row: JobDelivering(row, attempt),
                delivery_attempts=attempt,
                deliver_at=retry_at,
            )
        else:
            claimed = await self.ledger.note(job.id, expect=job.state, delivery_attempts=attempt, deliver_at=retry_at)
        if claimed is None:
            return
        self.schedule(claimed)
        try:
            async with asyncio.timeout(ATTEMPT_TIMEOUT):
                outcome = await self._attempt(claimed, self.destination)
        except TimeoutError:
            outcome = Retry(f"the attempt took longer than {ATTEMPT_TIMEOUT:.0f} s")
        except Exception as error:
            log.exception("job %d: delivery attempt failed unexpectedly", job.id, extra={"job_id": job.id})
            outcome = Retry(f"unexpected {type(error).__name__}")
        await self._settle(claimed, outcome)

    async def _attempt(self, job: Job, destination: Destination) -> Outcome | None:
        """One try; None when the job ended otherwise (its image cannot be had: failed, its notice now owed)."""
        if job.deleted_at is not None:
            return Gone("the reply is gone (deleted, or its channel or server)")
        if job.state is not JobState.DELIVERING:
            return await destination.deliver_notice(job)
        try:
            image = self._images.get(job.id) or await self._image(job)
        except RunComfyError as error:
            if error.retryable:
                return Retry(f"download: {error}")
            log.warning("job %d: result not downloadable: %s", job.id, error, extra={"job_id": job.id})
            await self.ledger.fail(job, error, expect=JobState.DELIVERING, kind=FailureKind.RETRYABLE)
            return None
        if job.cost_usd is None or job.cost_estimated:  # RunComfy sent no cost: its base price is the best guess
            price = await self.prices.base_price(job.model)
            estimate = round(price * job.count, 6) if price is not None else None
            if estimate is not None and estimate != job.cost_usd:
                job = await self.ledger.note(job.id, expect=job.state, cost_usd=estimate, cost_estimated=True) or job
        return await destination.deliver_images(job, image)

    def _remember(self, job_id: int, images: Images) -> None:
        self._images[job_id] = images
        while (
            sum(len(one.data) for kept in self._images.values() for one in kept) > CACHE_BYTES and len(self._images) > 1
        ):
            self._images.popitem(last=False)

    async def _settle(self, job: Job, outcome: Outcome | None) -> None:
        """Write what the attempt achieved; a Retry past the window, or a Gone, ends the delivery for good."""
        if outcome is None:
            self._images.pop(job.id, None)
            return
        if isinstance(outcome, Delivered):
            await self._delivered(job, outcome)
            return
        if isinstance(outcome, Retry) and self.clock.now() < self._window_end(job):
            retry_at = self.clock.now() + timedelta(seconds=max(backoff(job.delivery_attempts), outcome.after or 0.0))
            delayed = await self.ledger.note(
                job.id,
                expect=job.state,
                event=lambda row: DeliveryDelayed(row, outcome.reason, retry_at),
                deliver_at=retry_at,
                delivery_error=outcome.reason,
            )
            log.warning(
                "job %d: delivery attempt %d did not get through (%s); next at %s",
                job.id,
                job.delivery_attempts,
                outcome.reason,
                retry_at.isoformat(timespec="seconds"),
                extra={"job_id": job.id},
            )
            if delayed is not None:
                self.schedule(delayed)
            return
        reason = outcome.reason if isinstance(outcome, Gone) else f"Discord was unreachable: {outcome.reason}"
        await self._give_up(job, reason)
        if isinstance(outcome, Gone) and outcome.channel and job.origin.channel_id is not None:
            self._on_channel_gone(job.origin.channel_id, outcome.reason)

    async def _delivered(self, job: Job, outcome: Delivered) -> None:
        fields: dict[str, Any] = {"delivery": outcome.how, "deliver_at": None, "delivery_error": None}
        fields["interaction_token"] = None  # a secret nobody needs any more
        if outcome.message_id is not None:
            fields["message_id"] = outcome.message_id
        if job.state is JobState.DELIVERING:
            await self.ledger.move(
                job.id,
                JobState.DELIVERED,
                expect=JobState.DELIVERING,
                event=lambda row: JobDelivered(row, outcome.how),
                **fields,
            )
        else:
            await self.ledger.note(job.id, expect=job.state, event=lambda row: NoticeShown(row, outcome.how), **fields)
        self.forget(job.id)

    async def _give_up(self, job: Job, reason: str) -> None:
        fields: dict[str, Any] = {"deliver_at": None, "delivery_error": reason, "interaction_token": None}
        if job.state is JobState.DELIVERING:
            log.warning("job %d undeliverable: %s", job.id, reason, extra={"job_id": job.id})
            await self.ledger.move(
                job.id,
                JobState.UNDELIVERABLE,
                expect=JobState.DELIVERING,
                event=lambda row: JobUndeliverable(row, reason),
                **fields,
            )
        else:
            log.info("job %d: its end could not be shown: %s", job.id, reason, extra={"job_id": job.id})
            await self.ledger.note(
                job.id, expect=job.state, event=lambda row: NoticeLost(row, reason), delivery="unshown", **fields
            )
        self.forget(job.id)

    def _window_end(self, job: Job) -> datetime:
        made = job.completed_at or job.finished_at or job.created_at
        return made + self.retry_window
