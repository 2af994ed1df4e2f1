"""Deterministic stand-in images for the emulator, and the hostile variants of a result file.

Each (prompt, seed, aspect ratio) always gives the same PNG, so tests can
compare bytes. Full size matches what ImagineArt 1.5 renders (about 4 MP, see
bot.model_spec.RENDER_SIZES) and carries seeded noise so the file weighs
several MB like a real render; the default preview keeps the true proportions
at a long side of 256 px so tests stay fast.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import random
import struct
import zlib
from collections.abc import Awaitable, Callable
from functools import lru_cache

from aiohttp import web
from PIL import Image, ImageChops, ImageDraw

from bot.emulator_config import EmulatorConfig
from bot.model_spec import RENDER_SIZES

PREVIEW_LONG_SIDE = 256


def image_size(aspect_ratio: str, *, full_size: bool = False, long_side: int = PREVIEW_LONG_SIDE) -> tuple[int, int]:
    """Pixel size for a ratio: the model's render size, or that scaled so its long side is `long_side`."""
    width, height = RENDER_SIZES.get(aspect_ratio, RENDER_SIZES["1:1"])
    if full_size:
        return width, height
    scale = long_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


@lru_cache(maxsize=64)
def render_png(prompt: str, seed: int, aspect_ratio: str, *, full_size: bool = False) -> bytes:
    """A PNG unique to its inputs: a two-colour gradient, a few shapes, and fine noise; cached."""
    digest = hashlib.sha256(f"{prompt}\x00{seed}\x00{aspect_ratio}".encode()).digest()
    width, height = image_size(aspect_ratio, full_size=full_size)
    rng = random.Random(digest)  # noqa: S311 (pictures, not secrets)

    ramp = Image.linear_gradient("L").rotate(digest[0] * 360 / 256, resample=Image.Resampling.BILINEAR, expand=False)
    ramp = ramp.resize((width, height), Image.Resampling.BILINEAR)
    start, end = digest[1:4], digest[4:7]
    channels = [ramp.point(lambda v, a=a, b=b: a + (b - a) * v // 255) for a, b in zip(start, end, strict=True)]
    image = Image.merge("RGB", channels)

    draw = ImageDraw.Draw(image)
    for _ in range(3 + digest[7] % 4):
        x, y = rng.randrange(width), rng.randrange(height)
        radius = rng.randrange(max(2, min(width, height) // 8), max(3, min(width, height) // 3))
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), outline=colour, width=max(1, radius // 10))

    noise = Image.frombytes("L", (width, height), rng.randbytes(width * height)).point(lambda v: v // 16)
    image = ImageChops.add(image, Image.merge("RGB", (noise, noise, noise)))

    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


@lru_cache(maxsize=1)
def bomb_png(side: int = 30_000) -> bytes:
    """A decompression bomb: about 100 KB on the wire, a `side` x `side` 1-bit image (900 MP) once decoded."""
    row = bytes(1 + (side + 7) // 8)  # filter byte + packed pixels, all zero
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1 bit, greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


async def file_response(
    request: web.Request, config: EmulatorConfig, png: Callable[[], Awaitable[bytes]]
) -> web.StreamResponse:
    """The result file as `config.result_kind` says: the PNG, or one of the ways a download goes wrong."""
    kind = config.result_kind
    if kind == "redirect" and config.redirect_url:
        return web.Response(status=302, headers={"Location": config.redirect_url})
    if kind == "html":
        return web.Response(text="<!doctype html><html><body>Access denied</body></html>", content_type="text/html")
    if kind == "empty":
        return web.Response(body=b"", content_type="image/png")
    if kind == "huge":
        return await _stream_huge(request, config.huge_bytes, with_length=config.huge_content_length)
    if kind == "bomb":
        return web.Response(body=bomb_png(), content_type="image/png")
    data = await png()
    if kind == "truncated":
        data = data[: len(data) // 2]
    return web.Response(body=data, content_type="image/png")


async def _stream_huge(request: web.Request, total: int, *, with_length: bool) -> web.StreamResponse:
    """`total` bytes that start like a PNG, streamed, with or without Content-Length; stops if the client leaves."""
    response = web.StreamResponse(headers={"Content-Type": "image/png"})
    if with_length:
        response.content_length = total
    else:
        response.enable_chunked_encoding()
    await response.prepare(request)
    zeros = bytes(64 * 1024)
    sent = 0
    with contextlib.suppress(ConnectionError, RuntimeError):
        while sent < total:
            piece = zeros[: total - sent]
            if sent == 0:
                piece = (b"\x89PNG\r\n\x1a\n" + piece)[: len(piece)]
            await response.write(piece)
            sent += len(piece)
        await response.write_eof()
    return response
