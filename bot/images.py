"""Making a generated image fit Discord's upload limit.

ImagineArt renders about 4 MP; as PNG that can pass the 10 MiB a server
without boosts accepts. A member should get their picture, not an error, so
the image is re-encoded (WebP, then JPEG at falling quality) and, if that is
not enough, downscaled until it fits. Pillow's work is CPU-bound: callers run
`fit_under` in a thread (`asyncio.to_thread`) so the event loop keeps
answering interactions meanwhile.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image

# Leave room for the multipart envelope: Discord counts the file, we count bytes.
SAFETY_MARGIN = 64 * 1024
QUALITIES = (92, 85, 75)
MIN_LONG_SIDE = 512


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
    """Candidates from best looking to smallest, encoded only as far as needed."""
    for quality in QUALITIES:
        for fmt in ("WEBP", "JPEG"):
            buffer = io.BytesIO()
            options: dict[str, object] = {"method": 4} if fmt == "WEBP" else {"optimize": True}
            image.save(buffer, fmt, quality=quality, **options)
            yield EncodedImage(buffer.getvalue(), EXTENSIONS[fmt], image.width, image.height, reencoded=True)
