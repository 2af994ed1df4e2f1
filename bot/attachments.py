"""Images members hand the bot (an attachment on `/imagine`, a picture under "Edit image"): fetched at once, checked
like results.

Discord's attachment links expire (their `ex` query parameter, unix seconds in
hex; docs/models.md), so the bot downloads the image as soon as the command is
acknowledged, checks it by its bytes (PNG, JPEG, WebP or GIF, within
DOWNLOAD_MAX_BYTES and IMAGE_MAX_PIXELS, like a result) and keeps it with the
job; RunComfy is sent the link itself while it lives. Every refusal is one
sentence a member can act on.

The fetch comes after the command is acknowledged (cogs/starter.py), so
Discord's 3 seconds do not bound it: waiting for a turn and the download get
`FETCH_SECONDS` together, while the member watches "thinking...", and past
that the member is told to try again. What the fetches hold at once is
bounded instead: at most `FETCHES` images are downloaded and checked at a
time, each up to DOWNLOAD_MAX_BYTES while it waits for its decode on the
shared image workers (bot/images.py). Members beyond that wait their turn
rather than being refused at once: a burst of uploads is served a few at a
time, and only a turn that does not come within the budget is refused.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import aiohttp

from bot.download import DownloadedImage, HostPolicy, fetch_image
from bot.images import ImageWorkers
from bot.runcomfy_errors import DownloadError

if TYPE_CHECKING:
    from bot.settings import Settings

# Discord's CDN hosts for attachments; the bot's own Discord API host is added (a test's fake Discord).
DISCORD_CDN_HOSTS = ("cdn.discordapp.com", "media.discordapp.net")
FETCH_SECONDS = 20.0  # a slow CDN gets time, a stalled download does not keep a turn (and the member) for long
FETCHES = 4  # members' images downloaded at once: each may hold DOWNLOAD_MAX_BYTES until it is checked
FORMATS = "PNG, JPEG, WebP or GIF"  # what bot.download.ALLOWED_FORMATS accepts, as members read it


class ImageRefusedError(ValueError):
    """The member's image cannot be used; the text says why, for the member."""


@dataclass(frozen=True, slots=True)
class Offered:
    """An attachment as Discord describes it, before its bytes are fetched."""

    url: str
    filename: str
    size: int
    content_type: str | None


def link_expiry(url: str) -> datetime | None:
    """When a Discord CDN link stops working (its `ex` parameter), or None when it says nothing."""
    raw = parse_qs(urlsplit(url).query).get("ex", [""])[0]
    try:
        return datetime.fromtimestamp(int(raw, 16), tz=UTC)
    except (ValueError, OverflowError, OSError):
        return None


class AttachmentFetcher:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        discord_host: str,
        max_bytes: int,
        max_pixels: int,
        workers: ImageWorkers | None = None,
    ) -> None:
        self._session = session
        self._policy = HostPolicy([*DISCORD_CDN_HOSTS, discord_host], trusted_hosts=[discord_host])
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self._workers = workers
        self._slots = asyncio.Semaphore(FETCHES)

    @classmethod
    def from_settings(
        cls, session: aiohttp.ClientSession, settings: Settings, workers: ImageWorkers | None = None
    ) -> AttachmentFetcher:
        """Inputs are held to the results' limits: DOWNLOAD_MAX_BYTES and IMAGE_MAX_PIXELS."""
        return cls(
            session,
            discord_host=urlsplit(settings.discord_api_base_url).hostname or "",
            max_bytes=settings.download_max_bytes,
            max_pixels=settings.image_max_pixels,
            workers=workers,
        )

    def precheck(self, offered: Offered) -> None:
        """Refuse from Discord's description alone what the bytes could never redeem (nothing is downloaded)."""
        kind = (offered.content_type or "").split(";")[0].strip().lower()
        if kind and not kind.startswith("image/"):
            raise ImageRefusedError(f"**{offered.filename[:80]}** isn't an image: attach a {FORMATS} picture.")
        if offered.size > self.max_bytes:
            raise ImageRefusedError(
                f"That image weighs {offered.size / 2**20:.1f} MiB; the limit is {self.max_bytes / 2**20:.0f} MiB."
            )

    async def fetch(self, offered: Offered) -> DownloadedImage:
        """The image's verified bytes; ImageRefusedError with the member's sentence when they cannot be used."""
        self.precheck(offered)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FETCH_SECONDS  # waiting for a slot and the download share the one budget
        try:
            async with asyncio.timeout_at(deadline):
                await self._slots.acquire()
        except TimeoutError:
            raise ImageRefusedError("I'm fetching many images right now. Try again in a moment.") from None
        try:
            return await fetch_image(
                self._session,
                offered.url,
                policy=self._policy,
                max_bytes=self.max_bytes,
                total_seconds=max(0.1, deadline - loop.time()),
                max_pixels=self.max_pixels,
                workers=self._workers,
            )
        except DownloadError as error:
            raise ImageRefusedError(_why(error, self)) from None
        finally:
            self._slots.release()


def _why(error: DownloadError, fetcher: AttachmentFetcher) -> str:
    """The member's sentence for a download the checks refused (the operator's reason is logged by bot.download)."""
    text = str(error)
    if error.retryable:
        return "Discord didn't hand me the image in time. Try again in a moment."
    if "pixel budget" in text:
        return f"That image has too many pixels; the limit is {fetcher.max_pixels / 1e6:g} megapixels."
    if "exceeds" in text:
        return f"That image is larger than {fetcher.max_bytes / 2**20:.0f} MiB."
    if "HTTP 404" in text:
        return "That image's link has expired. Post it again, or use **Edit image** on the message."
    if "format" in text or "not a valid image" in text or "empty" in text:
        return f"That file isn't a picture I can read: attach a {FORMATS} image."
    return "I couldn't fetch that image from Discord. Try again, or post it again."
