"""Deterministic stand-in images for the emulator, and the hostile variants of a result file.

Each (prompt, seed, aspect ratio) always gives the same PNG, so tests can
compare bytes. Full size matches what ImagineArt 1.5 renders (about 4 MP, see
bot.model_spec.RENDER_SIZES) and carries seeded noise so the file weighs
several MB like a real render; the default preview keeps the true proportions
at a long side of 256 px so tests stay fast.

The prompt is written on the picture, word-wrapped on a dark panel at the
bottom, so whoever looks at a result (a developer in Discord against the
emulator, the README's pictures) sees which prompt made it. The font is the one
Pillow ships (`ImageFont.load_default(size)`, Aileron Regular, CC0), so nothing
depends on the fonts of the machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import random
import struct
import threading
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache, lru_cache

from aiohttp import web
from PIL import Image, ImageChops, ImageDraw, ImageFont

from bot.emulator_config import EmulatorConfig
from bot.model_spec import RENDER_SIZES

PREVIEW_LONG_SIDE = 256
# Text sizes, as shares of the geometric mean of width and height, so every ratio gets the same look.
TEXT_LARGEST = 0.085
TEXT_SMALLEST = 0.05
TEXT_MIN_PX = 10  # below this Aileron stops being readable
PANEL_MAX_HEIGHT = 0.5  # of the image: the picture stays visible above the words
ELLIPSIS = "…"
TEXT_COLOUR = (250, 250, 250)

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def image_size(aspect_ratio: str, *, full_size: bool = False, long_side: int = PREVIEW_LONG_SIDE) -> tuple[int, int]:
    """Pixel size for a ratio: the model's render size, or that scaled so its long side is `long_side`."""
    width, height = RENDER_SIZES.get(aspect_ratio, RENDER_SIZES["1:1"])
    if full_size:
        return width, height
    scale = long_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


# Lookup tables for Image.point, built once: a lambda there is called 256 times per band per image.
_LEVELS = range(256)
_NOISE = [v // 16 for v in _LEVELS]
_SHADE = [v * 2 // 7 for v in _LEVELS] * 3  # the panel behind the prompt: 2/7 of the picture's light


@lru_cache(maxsize=256)
def _ramp(angle: float) -> Image.Image:
    """A linear ramp at `angle` degrees, small: a linear ramp scales up to any size without loss.

    Rotated with room to spare, then cut to the square inside the turned one,
    so no corner is left unfilled (an unfilled corner, scaled up 40 times to a
    full-size render, shows as a staircase).
    """
    turned = Image.linear_gradient("L").resize((64, 64), Image.Resampling.BILINEAR)
    turned = turned.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    theta = math.radians(angle)
    inner = int(64 / (abs(math.cos(theta)) + abs(math.sin(theta)))) - 2  # the turned square's inscribed one
    left, top = (turned.width - inner) // 2, (turned.height - inner) // 2
    return turned.crop((left, top, left + inner, top + inner))


def _fresh_noise(width: int, height: int, rng: random.Random) -> Image.Image:
    """Fine grey noise (0..15 per channel): it keeps a PNG from compressing much, as a real render does not."""
    return Image.frombytes("L", (width, height), rng.randbytes(width * height)).point(_NOISE).convert("RGB")


@lru_cache(maxsize=len(RENDER_SIZES))
def _noise(width: int, height: int) -> Image.Image:
    """The same noise for every preview of a size: the gradient, shapes and prompt already make each unique."""
    return _fresh_noise(width, height, random.Random(f"{width}x{height}"))  # noqa: S311 (pictures, not secrets)


@lru_cache(maxsize=64)
def render_png(prompt: str, seed: int, aspect_ratio: str, *, full_size: bool = False) -> bytes:
    """A PNG unique to its inputs: a two-colour gradient, a few shapes, fine noise and the prompt; cached."""
    digest = hashlib.sha256(f"{prompt}\x00{seed}\x00{aspect_ratio}".encode()).digest()
    width, height = image_size(aspect_ratio, full_size=full_size)
    rng = random.Random(digest)  # noqa: S311 (pictures, not secrets)

    ramp = _ramp(digest[0] * 360 / 256).resize((width, height), Image.Resampling.BILINEAR)
    start, end = digest[1:4], digest[4:7]
    tint = [a + (b - a) * v // 255 for a, b in zip(start, end, strict=True) for v in _LEVELS]
    image = ramp.convert("RGB").point(tint)

    draw = ImageDraw.Draw(image)
    for _ in range(3 + digest[7] % 4):
        x, y = rng.randrange(width), rng.randrange(height)
        radius = rng.randrange(max(2, min(width, height) // 8), max(3, min(width, height) // 3))
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), outline=colour, width=max(1, radius // 10))

    image = ImageChops.add(image, _noise(width, height) if not full_size else _fresh_noise(width, height, rng))
    draw_prompt(image, prompt)

    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


# The emulator renders in worker threads (asyncio.to_thread), and a FreeType face must not be used by two at
# once (python-pillow/Pillow#9497): the cached fonts are shared, so their use is serialised.
_FONT_LOCK = threading.Lock()


@lru_cache(maxsize=32)
def _font(size: int) -> Font:
    """Pillow's bundled font at `size` px; building it decodes the embedded font, so each size is made once."""
    return ImageFont.load_default(size=size)


@dataclass(frozen=True)
class PromptLayout:
    """Where and how large the prompt goes: its lines, the font size, the panel's box and inner padding."""

    lines: tuple[str, ...]
    size: int
    box: tuple[int, int, int, int]
    pad: int

    @property
    def line_height(self) -> int:
        return round(self.size * 1.25)


@lru_cache(maxsize=256)
def layout_prompt(width: int, height: int, prompt: str) -> PromptLayout | None:
    """The largest size at which the wrapped prompt fits the panel; None when there is nothing to show.

    The size starts from an estimate of what fills the panel and steps down
    until the wrapped words fit in `PANEL_MAX_HEIGHT` of the image without
    breaking a word; a prompt too long even at `TEXT_SMALLEST` ends with "…".
    Cached: rerolls of a prompt (same words, other seed) reuse it.
    """
    words = "".join(c if c.isprintable() else " " for c in prompt).split()
    if not words:
        return None
    scale = (width * height) ** 0.5
    margin = max(2, round(scale * 0.04))
    largest = max(TEXT_MIN_PX, round(scale * TEXT_LARGEST))
    smallest = max(TEXT_MIN_PX, round(scale * TEXT_SMALLEST))
    # Aileron averages about half an em per character: start a little above the size that fills the room.
    room_area = (width - 2 * margin) * height * PANEL_MAX_HEIGHT
    size = min(largest, max(smallest, round(1.15 * (room_area / (sum(map(len, words)) * 0.5 * 1.25)) ** 0.5)))
    while True:
        font, pad, line_height = _font(size), max(2, size // 2), round(size * 1.25)
        text_width = width - 2 * margin - 2 * pad
        room = max(1, int((height * PANEL_MAX_HEIGHT - 2 * pad) // line_height))
        lines, broke_a_word = wrap(words, font, text_width, room)
        if size <= smallest or (lines[-1] is not None and not broke_a_word):
            break
        size = max(smallest, round(size * 0.85))
    shown = [line for line in lines if line is not None]
    if lines[-1] is None:  # more words than room even at the smallest size
        shown[-1] = _with_ellipsis(shown[-1], font, text_width)
    panel_height = len(shown) * line_height + 2 * pad - (line_height - size)
    box = (margin, height - margin - panel_height, width - margin, height - margin)
    return PromptLayout(tuple(shown), size, box, pad)


def draw_prompt(image: Image.Image, prompt: str) -> None:
    """Write `prompt` on a dark rounded panel along the bottom of `image` (see `layout_prompt`)."""
    with _FONT_LOCK:
        layout = layout_prompt(image.width, image.height, prompt)
    if layout is None:
        return
    box, pad = layout.box, layout.pad
    region = image.crop(box)
    shade = Image.new("L", region.size, 0)
    ImageDraw.Draw(shade).rounded_rectangle((0, 0, *region.size), radius=pad, fill=255)
    image.paste(region.point(_SHADE), box[:2], shade)
    draw = ImageDraw.Draw(image)
    with _FONT_LOCK:
        font = _font(layout.size)
        for index, line in enumerate(layout.lines):
            draw.text((box[0] + pad, box[1] + pad + index * layout.line_height), line, font=font, fill=TEXT_COLOUR)


def wrap(words: list[str], font: Font, width: float, room: int) -> tuple[list[str | None], bool]:
    """Greedy word wrap into at most `room` lines; a trailing None says words were left over.

    Each word is measured once (a line is its words plus spaces). A word wider
    than a line on its own is broken between characters; the second value says
    whether that happened, since a smaller size may avoid it.
    """
    measure = cache(font.getlength)
    space = measure(" ")
    lines: list[str | None] = []
    line: list[str] = []
    used = 0.0
    broke = False
    for word in words:
        length = measure(word)
        if (used + space + length if line else length) <= width:
            used = used + space + length if line else length
            line.append(word)
            continue
        if line:
            lines.append(" ".join(line))
        while len(word) > 1 and length > width:
            broke = True
            cut = _longest_prefix(word, measure, width)
            lines.append(word[:cut])
            word = word[cut:]
            length = measure(word)
        line, used = [word], length
        if len(lines) >= room:
            return [*lines[:room], None], broke
    lines.append(" ".join(line))
    return (lines if len(lines) <= room else [*lines[:room], None]), broke


def _longest_prefix(word: str, measure: Callable[[str], float], width: float) -> int:
    """How many leading characters of `word` fit in `width` (at least one), by bisection."""
    low, high = 1, len(word)
    while low < high:
        middle = (low + high + 1) // 2
        if measure(word[:middle]) <= width:
            low = middle
        else:
            high = middle - 1
    return low


def _with_ellipsis(line: str, font: Font, width: float) -> str:
    """`line` shortened by words (or characters) until it ends with "…" within `width`."""
    while line and font.getlength(line + ELLIPSIS) > width:
        line = line.rsplit(" ", 1)[0] if " " in line else line[:-1]
    return line + ELLIPSIS


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
