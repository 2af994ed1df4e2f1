"""`make pictures` for real: the bot, the fake Discord and the emulator, then Chromium, in a subprocess.

The pages are checked for what a member sees (words, mentions by name, the
image, the buttons); the screenshots for being drawn (size, and the colours of
the embed bar and the buttons, found without OCR). Without Chromium the
screenshots are skipped on a developer's machine and fail in CI (`CI` set),
where .ci/run installs it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from tools.discord_html import PAGE_WIDTH
from tools.pictures import SCALE, chromium

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ("queued", "generating", "done", "admin-show")


async def make_pictures(out: Path, *flags: str) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tools.pictures", "--out", str(out), *flags, cwd=ROOT, stdout=-1, stderr=-1
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 100)
    assert process.returncode == 0, stderr.decode()
    return stdout.decode()


def load(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def has_colour(image: Image.Image, colour: tuple[int, int, int], at_least: int = 50) -> bool:
    """Whether `colour` (within a little) fills at least `at_least` pixels: a bar, a button."""
    red, green, blue = ImageChops.difference(image, Image.new("RGB", image.size, colour)).split()
    farthest = ImageChops.lighter(ImageChops.lighter(red, green), blue)  # the largest channel difference
    return sum(farthest.histogram()[:7]) >= at_least


async def test_make_pictures_draws_what_a_member_sees(tmp_path: Path) -> None:
    browser = chromium()
    if browser is None and os.environ.get("CI"):
        pytest.fail("CI must test the screenshots: .ci/run installs chromium (apt-get install -y chromium)")
    await make_pictures(tmp_path, "--keep-html" if browser else "--html-only")
    pages = {name: (tmp_path / f"{name}.html").read_text() for name in SHOTS}
    assert "Queued · #" in pages["queued"]
    assert "Cancel" in pages["queued"]
    assert "Generating" in pages["generating"]
    assert "data:image/png;base64," in pages["done"]
    assert all(label in pages["done"] for label in ("Reroll", "Remix", "Delete"))
    assert "/imagine settings" in pages["admin-show"]
    assert "Only you can see this" in pages["admin-show"]
    assert all("@alice" in pages[name] for name in ("queued", "generating", "done"))  # names, not ids
    assert not any("&lt;@" in page for page in pages.values())
    if browser is None:
        pytest.skip("Chromium is not installed: pages checked, screenshots not taken")
    shots = {name: load(tmp_path / f"{name}.png") for name in SHOTS}
    for image in shots.values():
        assert image.width == PAGE_WIDTH * SCALE
        assert 150 * SCALE < image.height < 700 * SCALE  # cut below the message
    assert has_colour(shots["queued"], (0xDA, 0x37, 0x3C), 2000)  # the red Cancel button
    assert has_colour(shots["done"], (0x2E, 0xCC, 0x71))  # the finished embed's green bar
    assert has_colour(shots["admin-show"], (0x58, 0x65, 0xF2))  # the settings embed's blurple bar


def test_without_chromium_the_command_says_what_to_install(tmp_path: Path) -> None:
    """A PATH without Chromium: one line naming the package, status 2, nothing captured."""
    import subprocess

    bare = tmp_path / "bin"  # an empty PATH: the interpreter is named by its full path
    bare.mkdir()
    done = subprocess.run(  # noqa: S603 (a fixed command line)
        [sys.executable, "-m", "tools.pictures", "--out", str(tmp_path / "out")],
        cwd=ROOT,
        env={**os.environ, "PATH": str(bare)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "apt-get install -y chromium" in done.stderr
    assert not (tmp_path / "out").exists()
    assert shutil.which("chromium", path=str(bare)) is None
