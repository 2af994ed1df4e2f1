"""Making a generated image fit Discord's upload limit.

ImagineArt renders about 4 MP; as PNG that can pass the 10 MiB a server
without boosts accepts. A member should get their picture, not an error, so
the image is re-encoded (WebP, then JPEG at falling quality) and, if that is
not enough, downscaled until it fits.

Pillow's work is CPU-bound and memory-hungry: a decoded image holds about 4
bytes per pixel, and re-encoding holds an RGB copy and a scaled one beside it.
So it runs on `ImageWorkers`, a few threads of the bot's own (IMAGE_WORKERS,
default 2): the event loop keeps answering interactions meanwhile, and however
many images finish at once, at most that many are in memory decoded. With
`asyncio.to_thread` each would get a thread of its own, each up to the pixel
budget (README, "For operators" → "Memory").
"""

from __future__ import annotations

import asyncio
import functools
import io
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from PIL import Image

if TYPE_CHECKING:
    from bot.settings import Settings

P = ParamSpec("P")
T = TypeVar("T")

# Leave room for the multipart envelope: Discord counts the file, we count bytes.
SAFETY_MARGIN = 64 * 1024
QUALITIES = (92, 85, 75)
MIN_LONG_SIDE = 512
# Twice the largest ImagineArt render (2048 x 2048): real results keep WebP, outsized ones do not.
WEBP_MAX_PIXELS = 8_400_000


@dataclass(frozen=True, slots=True)
class EncodedImage:
    data: bytes
    extension: str  # what the attachment's file name ends with; Discord embeds need png/jpg/webp/gif
    width: int
    height: int
    reencoded: bool


EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "GIF": "gif"}


def fit_under(data: bytes, image_format: str, limit: int) -> EncodedImage:
    """`data` unchanged if it fits in `limit` bytes and Discord can embed its type; else a smaller encoding."""
    with Image.open(io.BytesIO(data)) as source:
        width, height = source.size  # from the header: Pillow decodes pixels only when `convert` needs them
        budget = max(limit - SAFETY_MARGIN, 1)
        extension = EXTENSIONS.get(image_format.upper())
        if extension is not None and len(data) <= budget:
            return EncodedImage(data, extension, width, height, reencoded=False)
        image = source.convert("RGB")
    scale = 1.0
    while True:
        candidate = image if scale == 1.0 else _scaled(image, scale)
        smallest: EncodedImage | None = None
        for encoded in _encodings(candidate):
            if len(encoded.data) <= budget:
                return encoded
            smallest = encoded
        if max(candidate.size) <= MIN_LONG_SIDE and smallest is not None:
            return smallest  # a 512 px JPEG at quality 75 is far below any limit Discord has
        scale *= 0.75


def _scaled(image: Image.Image, scale: float) -> Image.Image:
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def _encodings(image: Image.Image) -> Iterator[EncodedImage]:
    """Candidates from best looking to smallest, encoded only as far as needed.

    WebP's encoder holds about 26 bytes per pixel (JPEG's about 4), so an image
    larger than WEBP_MAX_PIXELS goes straight to JPEG: that keeps one worker's
    peak near 8 bytes per pixel of the pixel budget (bench/image_memory.py).
    """
    formats = ("WEBP", "JPEG") if image.width * image.height <= WEBP_MAX_PIXELS else ("JPEG",)
    for quality in QUALITIES:
        for fmt in formats:
            buffer = io.BytesIO()
            options: dict[str, object] = {"method": 4} if fmt == "WEBP" else {"optimize": True}
            image.save(buffer, fmt, quality=quality, **options)
            yield EncodedImage(buffer.getvalue(), EXTENSIONS[fmt], image.width, image.height, reencoded=True)


class ImageWorkers:
    """Runs blocking image work (decode checks, `fit_under`) on at most `count` threads of its own.

    One per process, shared by the download check and the delivery re-encode.
    A call beyond `count` waits (without a thread) until one finishes. A
    caller cancelled while its image is being worked on does not free the slot
    early: the thread still holds the pixels, so the slot frees when it ends.
    """

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError(f"ImageWorkers needs at least one worker, got {count}")
        self.count = count
        self._pool = ThreadPoolExecutor(max_workers=count, thread_name_prefix="image")
        self._slots = asyncio.Semaphore(count)
        self.running = 0
        self.waiting = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageWorkers:
        return cls(settings.image_workers)

    def __repr__(self) -> str:
        return f"ImageWorkers(count={self.count}, running={self.running}, waiting={self.waiting})"

    async def run(self, func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """`func(*args, **kwargs)` on a worker thread, once one is free."""
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            future = asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(func, *args, **kwargs))
        except BaseException:
            self._finished()
            raise
        future.add_done_callback(lambda _: self._finished())
        return await asyncio.shield(future)

    async def fit_under(self, data: bytes, image_format: str, limit: int) -> EncodedImage:
        """`fit_under` on a worker: what delivery calls instead of `asyncio.to_thread(fit_under, ...)`."""
        return await self.run(fit_under, data, image_format, limit)

    def _finished(self) -> None:
        self.running -= 1
        self._slots.release()

    def close(self) -> None:
        """Stop taking work; images being worked on finish on their threads, queued ones are dropped."""
        self._pool.shutdown(wait=False, cancel_futures=True)
