"""The prompt is written on the emulator's pictures: layout rules, and pixel checks without OCR.

The pixel checks draw on a flat grey picture, so every pixel that changed was
changed by the prompt: the dark panel (30 % of the grey) and near-white glyphs.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageChops

from bot.emulator_images import (
    ELLIPSIS,
    PANEL_MAX_HEIGHT,
    TEXT_MIN_PX,
    _font,
    draw_prompt,
    image_size,
    layout_prompt,
    render_png,
    wrap,
)
from bot.model_spec import PROMPT_MAX, RATIO_VALUES

GREY = (120, 120, 120)
FOX = "a red fox, watercolor"
LIGHTHOUSE = "a lighthouse on a cliff at dusk, oil painting, dramatic clouds, warm light from the windows"


def drawn(prompt: str, size: tuple[int, int] = (256, 256)) -> Image.Image:
    image = Image.new("RGB", size, GREY)
    draw_prompt(image, prompt)
    return image


def glyph_pixels(image: Image.Image) -> set[tuple[int, int]]:
    """Where the picture is near white: only the prompt's letters are, on a grey picture."""
    width = image.width
    return {(i % width, i // width) for i, value in enumerate(image.convert("L").tobytes()) if value > 200}


def test_the_prompt_is_drawn_in_a_panel_at_the_bottom() -> None:
    image = drawn(FOX)
    layout = layout_prompt(256, 256, FOX)
    assert layout is not None
    left, top, right, bottom = layout.box
    changed = ImageChops.difference(image, Image.new("RGB", image.size, GREY)).getbbox()
    assert changed == layout.box  # nothing outside the panel moved
    assert top >= 256 * (1 - PANEL_MAX_HEIGHT)
    glyphs = glyph_pixels(image)
    assert len(glyphs) > 150  # "a red fox, watercolor" at ~18 px is several hundred pixels of ink
    assert all(left < x < right and top < y < bottom for x, y in glyphs)
    assert image.getpixel((left + 1, (top + bottom) // 2)) == (34, 34, 34)  # the panel: 2/7 of the grey


def test_different_prompts_draw_different_words_and_the_same_prompt_the_same() -> None:
    fox, lighthouse = glyph_pixels(drawn(FOX)), glyph_pixels(drawn(LIGHTHOUSE))
    assert fox != lighthouse
    assert glyph_pixels(drawn(FOX)) == fox
    assert glyph_pixels(drawn("a red fox, watercolour")) != fox  # one letter more shows


def test_results_of_two_seeds_share_the_text_and_differ_elsewhere() -> None:
    """A reroll (same prompt, new seed) changes the picture, not the words written on it."""
    first = Image.open(io.BytesIO(render_png(FOX, 1, "1:1")))
    second = Image.open(io.BytesIO(render_png(FOX, 2, "1:1")))
    layout = layout_prompt(*first.size, FOX)
    assert layout is not None
    left, top, right, bottom = layout.box
    inside = (left + layout.pad, top + layout.pad, right - layout.pad, bottom - layout.pad)
    text_first, text_second = glyph_pixels(first.crop(inside)), glyph_pixels(second.crop(inside))
    assert text_first
    assert len(text_first ^ text_second) < 0.1 * len(text_first)  # the same letters (a light background may add a few)
    assert ImageChops.difference(first.crop((0, 0, first.width, top)), second.crop((0, 0, first.width, top))).getbbox()


@pytest.mark.parametrize("ratio", RATIO_VALUES)
def test_every_ratio_shows_a_usual_prompt_whole_and_readable(ratio: str) -> None:
    width, height = image_size(ratio)
    for prompt in (FOX, LIGHTHOUSE):
        layout = layout_prompt(width, height, prompt)
        assert layout is not None
        assert " ".join(layout.lines) == prompt  # every word, none broken
        assert layout.size >= TEXT_MIN_PX
        assert layout.box[3] - layout.box[1] <= height * PANEL_MAX_HEIGHT + 1
        assert all(_font(layout.size).getlength(line) <= width - 2 * layout.box[0] for line in layout.lines)
    full = layout_prompt(*image_size(ratio, full_size=True), FOX)
    assert full is not None
    assert full.size > 5 * TEXT_MIN_PX  # a 4 MP render gets letters to match


def test_a_prompt_too_long_to_fit_ends_with_an_ellipsis() -> None:
    prompt = " ".join(["lighthouse"] * (PROMPT_MAX // 11))
    layout = layout_prompt(256, 256, prompt)
    assert layout is not None
    assert layout.lines[-1].endswith(ELLIPSIS)
    assert layout.box[3] - layout.box[1] <= 256 * PANEL_MAX_HEIGHT
    assert len(glyph_pixels(drawn(prompt))) > 1000


def test_nothing_printable_draws_nothing() -> None:
    for prompt in ("", "   ", "\u200b\u202e\x00"):
        assert layout_prompt(256, 256, prompt) is None
        assert ImageChops.difference(drawn(prompt), Image.new("RGB", (256, 256), GREY)).getbbox() is None


def test_wrap_breaks_only_a_word_wider_than_a_line() -> None:
    font = _font(20)
    lines, broke = wrap(["a", "red", "fox"], font, 1000, 3)
    assert (lines, broke) == (["a red fox"], False)
    lines, broke = wrap(["x" * 40], font, 100, 10)
    assert broke
    assert "".join(line or "" for line in lines) == "x" * 40
    assert all(font.getlength(line or "") <= 100 for line in lines)
    lines, _ = wrap(["word"] * 100, font, 100, 2)
    assert len(lines) == 3
    assert lines[-1] is None  # words were left over
