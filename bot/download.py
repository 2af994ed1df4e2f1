"""Fetching a finished image from a result URL, treating the URL as hostile.

The URL comes from an upstream answer, so it is checked like user input: only
http(s), only allowlisted hosts (re-checked on every redirect), no literal
private or loopback address unless the operator listed it, no host name whose
DNS answer holds such an address (`bot.addresses`: checked inside the
connector, so the bot connects to the address it checked), a byte cap enforced
while streaming, and the bytes must decode as an image. The API token is never
sent here: the request carries no Authorization header.

The process's one `aiohttp.ClientSession` must be built with
`download_connector(settings)` (or `open_session(settings)`) for the address
check to hold on every hop. A session without it still gets the check, done
by a separate lookup before each hop, and a warning: that closes the plain
"the name points at 127.0.0.1" hole but not a DNS server that answers
differently the second time.

Every refusal is logged at WARNING with the host and the reason; the member
only ever sees the error's generic `user_message`.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import logging
import socket
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver
from PIL import Image, UnidentifiedImageError

from bot.addresses import PinnedResolver
from bot.runcomfy_errors import DownloadError, parse_retry_after

if TYPE_CHECKING:
    from bot.images import ImageWorkers
    from bot.settings import Settings

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
DEFAULT_MAX_PIXELS = 40_000_000  # IMAGE_MAX_PIXELS's default: ten times the largest ImagineArt render
# What Discord shows inline; anything else Pillow can read is still refused.
ALLOWED_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "GIF"})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class DownloadedImage:
    """Verified image bytes; `format` and `content_type` come from the bytes, not the server's word."""

    data: bytes
    format: str
    width: int
    height: int
    content_type: str

    @property
    def extension(self) -> str:
        """File extension for an attachment name, e.g. "png"."""
        return "jpg" if self.format == "JPEG" else self.format.lower()


class HostPolicy:
    """Which hosts result files may come from.

    Patterns are exact host names or `*.domain`, which matches any subdomain of
    `domain` (not `domain` itself). A literal IP address is allowed only when it
    is listed exactly: that is how an emulator on 127.0.0.1 gets in, while a
    result pointing at 10.0.0.5 or ::1 does not.
    """

    def __init__(self, patterns: Sequence[str], *, trusted_hosts: Iterable[str] = ()) -> None:
        """`trusted_hosts`: the operator's API host, whose DNS answers are not address-checked."""
        self.trusted_hosts = tuple(host for host in trusted_hosts if host)
        self.exact: set[str] = set()
        self.suffixes: list[str] = []
        for raw in patterns:
            pattern = raw.strip().lower().rstrip(".")
            if pattern.startswith("*."):
                self.suffixes.append(pattern[1:])
            elif pattern:
                self.exact.add(pattern.strip("[]"))

    def allows(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        if host in self.exact:
            return True
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            return False  # IP literals only by exact listing, whatever their range
        return any(host.endswith(suffix) and len(host) > len(suffix) for suffix in self.suffixes)

    def check(self, url: str) -> None:
        """Raise DownloadError unless `url` is an http(s) URL on an allowed host, without credentials."""
        try:
            parts = urlsplit(url)
            host = parts.hostname
            parts.port  # noqa: B018  (raises ValueError on a garbage port)
        except ValueError as exc:
            raise DownloadError(f"download refused: unparsable URL ({exc})") from None
        if parts.scheme.lower() not in ("http", "https"):
            raise DownloadError(f"download refused: scheme {parts.scheme!r} is not http(s)")
        if not host:
            raise DownloadError("download refused: URL has no host")
        if parts.username is not None or parts.password is not None:
            raise DownloadError("download refused: URL carries credentials")
        if not self.allows(host):
            raise DownloadError(f"download refused: host {host!r} is not in the allowlist")


class PinnedConnector(aiohttp.TCPConnector):
    """A TCPConnector whose every DNS answer passes `PinnedResolver`; `fetch_image` checks for this class."""

    def __init__(self, resolver: PinnedResolver, **options: Any) -> None:
        super().__init__(resolver=resolver, **options)
        self.pinned = resolver

    async def close(self, *, abort_ssl: bool = False) -> None:
        await super().close(abort_ssl=abort_ssl)
        await self.pinned.close()  # the connector closes only resolvers it made itself


def download_connector(settings: Settings, *, resolver: AbstractResolver | None = None) -> PinnedConnector:
    """The connector for the process's one ClientSession (call it inside the event loop).

    Every host name it connects to resolves through `PinnedResolver`, trusting
    only the host of RUNCOMFY_BASE_URL; `resolver` replaces the system's DNS
    (tests map names to addresses with it).
    """
    api_host = urlsplit(settings.runcomfy_base_url).hostname
    return PinnedConnector(PinnedResolver([api_host] if api_host else [], resolver=resolver))


def open_session(
    settings: Settings, *, resolver: AbstractResolver | None = None, **options: Any
) -> aiohttp.ClientSession:
    """The process's one ClientSession, on `download_connector(settings)`; `options` go to ClientSession."""
    return aiohttp.ClientSession(connector=download_connector(settings, resolver=resolver), **options)


def inspect_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> DownloadedImage:
    """Verify `data` decodes as an allowed image format within the pixel budget; blocking, run it in a thread.

    The size is checked from the header before any pixel is decoded, so a
    decompression bomb costs nothing; `verify()` checks the structure and a full
    `load()` catches truncated pixel data that `verify()` lets through.
    """
    if not data:
        raise DownloadError("download rejected: empty body")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            fmt = probe.format or ""
            width, height = probe.size
            if width * height > max_pixels:
                raise DownloadError(f"download rejected: {width}x{height} exceeds the {max_pixels} pixel budget")
            if fmt not in ALLOWED_FORMATS:
                raise DownloadError(f"download rejected: unsupported image format {fmt or 'unknown'}")
            probe.verify()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except DownloadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DownloadError(f"download rejected: decompression bomb ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError, UnidentifiedImageError) as exc:
        raise DownloadError(f"download rejected: not a valid image ({type(exc).__name__}: {exc})") from None
    return DownloadedImage(
        data=data, format=fmt, width=width, height=height, content_type=Image.MIME.get(fmt, "application/octet-stream")
    )


async def fetch_image(
    session: aiohttp.ClientSession,
    url: str,
    *,
    policy: HostPolicy,
    max_bytes: int,
    total_seconds: float,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    before_attempt: Callable[[], Awaitable[None]] | None = None,
    workers: ImageWorkers | None = None,
) -> DownloadedImage:
    """Download and verify one image, following at most MAX_REDIRECTS redirects by hand.

    `total_seconds` bounds the whole chain (redirects, headers and body). Transport
    failures and 408/429/5xx answers raise a DownloadError with retryable=True;
    everything about the content is final. The decode check runs on `workers`
    (the process's bounded image threads); without them, on a thread of its own.
    """
    try:
        async with asyncio.timeout(total_seconds):
            data = await _fetch_bytes(session, url, policy=policy, max_bytes=max_bytes, before_attempt=before_attempt)
    except DownloadError as error:
        if not error.retryable:
            log.warning("%s", error)  # the operator's why; the member gets error.user_message
        raise
    except TimeoutError:
        raise DownloadError(f"download timed out after {total_seconds:g}s", retryable=True) from None
    except aiohttp.ClientError as exc:
        raise DownloadError(f"download failed: {type(exc).__name__}", retryable=True) from None
    if workers is not None:
        return await workers.run(inspect_image, data, max_pixels=max_pixels)
    return await asyncio.to_thread(inspect_image, data, max_pixels=max_pixels)


async def _fetch_bytes(
    session: aiohttp.ClientSession,
    url: str,
    *,
    policy: HostPolicy,
    max_bytes: int,
    before_attempt: Callable[[], Awaitable[None]] | None,
) -> bytes:
    pinned = isinstance(session.connector, PinnedConnector)
    if not pinned:
        _warn_unpinned(session)
    for _hop in range(MAX_REDIRECTS + 1):
        policy.check(url)
        if not pinned:
            await _check_addresses(url, policy)
        if before_attempt is not None:
            await before_attempt()
        # No headers of ours: the token must never reach the file host.
        async with session.get(url, allow_redirects=False) as resp:
            if resp.status in _REDIRECTS:
                location = resp.headers.get("Location")
                if not location:
                    raise DownloadError(f"download failed: HTTP {resp.status} without Location", status=resp.status)
                url = urljoin(url, location)
                log.debug("download redirected (HTTP %d)", resp.status)
                continue
            if resp.status in (408, 429) or resp.status >= 500:
                raise DownloadError(
                    f"download failed: HTTP {resp.status}",
                    status=resp.status,
                    retryable=True,
                    retry_after=parse_retry_after(resp.headers.get("Retry-After")),
                )
            if resp.status != 200:
                raise DownloadError(f"download failed: HTTP {resp.status}", status=resp.status)
            return await _read_capped(resp, max_bytes)
    raise DownloadError(f"download refused: more than {MAX_REDIRECTS} redirects")


_warned_sessions: weakref.WeakSet[aiohttp.ClientSession] = weakref.WeakSet()


def _warn_unpinned(session: aiohttp.ClientSession) -> None:
    """Once per session (there is one per process): the wiring does not change while it runs."""
    if session not in _warned_sessions:
        _warned_sessions.add(session)
        log.warning(
            "the HTTP session is not built with bot.download.open_session(settings): result hosts are "
            "address-checked by a lookup of their own, which a rebinding DNS server could answer differently"
        )


async def _check_addresses(url: str, policy: HostPolicy) -> None:
    """The address check for a session without a PinnedConnector: resolve once and check, before connecting."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return  # a literal address: the allowlist already decided (listed exactly, or refused)
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    resolver = PinnedResolver(policy.trusted_hosts)
    try:
        await resolver.resolve(host, port, socket.AF_UNSPEC)
    except OSError as exc:
        raise DownloadError(f"download failed: cannot resolve {host} ({exc})", retryable=True) from None
    finally:
        await resolver.close()


async def _read_capped(resp: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """The body, aborting the connection the moment it passes `max_bytes` (Content-Length is not trusted)."""
    declared = resp.content_length
    if declared is not None and declared > max_bytes:
        resp.close()
        raise DownloadError(f"download rejected: Content-Length {declared} exceeds {max_bytes} bytes")
    buffer = bytearray()
    async for chunk in resp.content.iter_chunked(_CHUNK):
        buffer += chunk
        if len(buffer) > max_bytes:
            resp.close()
            raise DownloadError(f"download rejected: body exceeds {max_bytes} bytes")
    return bytes(buffer)
