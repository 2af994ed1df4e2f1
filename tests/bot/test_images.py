import asyncio
import io
import os
import threading
from collections.abc import AsyncIterator

import pytest
from PIL import Image

from bot.images import WEBP_MAX_PIXELS, ImageWorkers, fit_under
from bot.settings import Settings

WAIT = 30.0  # seconds a thread waits for the test's signal before the test counts as hung


def png_bytes(width: int, height: int, noisy: bool = False) -> bytes:
    image = (
        Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
        if noisy
        else Image.new("RGB", (width, height), (200, 30, 30))
    )
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_small_png_is_sent_as_it_is() -> None:
    data = png_bytes(64, 36)
    fitted = fit_under(data, "PNG", 10 * 1024 * 1024)
    assert fitted.data == data
    assert (fitted.extension, fitted.width, fitted.height, fitted.reencoded) == ("png", 64, 36, False)


def test_oversized_png_is_reencoded_under_the_limit_keeping_proportions() -> None:
    data = png_bytes(1600, 900, noisy=True)  # noise does not compress: about 4 MB
    limit = 1024 * 1024
    assert len(data) > limit
    fitted = fit_under(data, "PNG", limit)
    assert len(fitted.data) <= limit
    assert fitted.reencoded
    assert abs(fitted.width / fitted.height - 16 / 9) < 0.01
    with Image.open(io.BytesIO(fitted.data)) as image:
        assert image.format in ("WEBP", "JPEG")


def test_tiny_limit_downscales_until_it_fits() -> None:
    data = png_bytes(1200, 1200, noisy=True)
    fitted = fit_under(data, "PNG", 200 * 1024)
    assert len(fitted.data) <= 200 * 1024
    assert fitted.width < 1200


def test_format_discord_cannot_embed_is_converted() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buffer, "BMP")
    fitted = fit_under(buffer.getvalue(), "BMP", 10 * 1024 * 1024)
    assert fitted.extension in ("webp", "jpg")


class Blocker:
    """Blocking work the test controls: it says when it started and finishes when told to."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> str:
        self.started.set()
        if not self.release.wait(WAIT):
            raise TimeoutError(f"{self.name} was never released")
        return self.name


async def started(blocker: Blocker) -> bool:
    return await asyncio.to_thread(blocker.started.wait, WAIT)


async def one_turn() -> None:
    """Let every task that is ready take its first step (a new task runs up to its first real wait)."""
    await asyncio.sleep(0)


@pytest.fixture
async def workers() -> AsyncIterator[ImageWorkers]:
    pool = ImageWorkers(2)
    yield pool
    pool.close()


async def test_a_call_beyond_the_worker_count_waits_until_one_finishes(workers: ImageWorkers) -> None:
    first, second, third = Blocker("first"), Blocker("second"), Blocker("third")
    tasks = [asyncio.create_task(workers.run(blocker)) for blocker in (first, second)]
    assert await started(first)
    assert await started(second)
    tasks.append(asyncio.create_task(workers.run(third)))
    await one_turn()
    assert workers.waiting == 1
    assert not third.started.is_set()  # no thread was even asked: it waits for a slot
    assert (workers.running, workers.waiting) == (2, 1)

    second.release.set()
    assert await started(third)
    assert await tasks[1] == "second"
    assert not tasks[0].done()
    first.release.set()
    third.release.set()
    assert await asyncio.gather(*tasks) == ["first", "second", "third"]
    assert (workers.running, workers.waiting) == (0, 0)


async def test_a_cancelled_caller_keeps_its_slot_until_its_thread_ends(workers: ImageWorkers) -> None:
    """The thread still holds the pixels after its caller gave up, so its slot is not handed on early."""
    busy, other, queued = Blocker("busy"), Blocker("other"), Blocker("queued")
    abandoned = asyncio.create_task(workers.run(busy))
    keeps = asyncio.create_task(workers.run(other))
    assert await started(busy)
    assert await started(other)
    waiting = asyncio.create_task(workers.run(queued))
    await one_turn()
    assert workers.waiting == 1

    abandoned.cancel()
    with pytest.raises(asyncio.CancelledError):
        await abandoned
    assert workers.running == 2
    assert not queued.started.is_set()
    busy.release.set()
    assert await started(queued)
    other.release.set()
    queued.release.set()
    assert list(await asyncio.gather(keeps, waiting)) == ["other", "queued"]  # a list, though typeshed says tuple


async def test_a_waiting_caller_that_is_cancelled_never_runs(workers: ImageWorkers) -> None:
    one, two, never = Blocker("one"), Blocker("two"), Blocker("never")
    running = [asyncio.create_task(workers.run(blocker)) for blocker in (one, two)]
    assert await started(one)
    assert await started(two)
    gave_up = asyncio.create_task(workers.run(never))
    await one_turn()
    assert workers.waiting == 1
    gave_up.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gave_up
    assert workers.waiting == 0
    one.release.set()
    two.release.set()
    assert await asyncio.gather(*running) == ["one", "two"]
    assert not never.started.is_set()
    assert workers.running == 0


async def test_errors_reach_the_caller_and_free_the_slot() -> None:
    workers = ImageWorkers(1)
    try:
        with pytest.raises(OSError, match="cannot identify image file"):
            await workers.fit_under(b"not an image", "PNG", 1024)
        fitted = await workers.fit_under(png_bytes(64, 64), "PNG", 10 * 1024 * 1024)
        assert (fitted.width, fitted.reencoded) == (64, False)
        assert workers.running == 0
    finally:
        workers.close()


def test_worker_count_comes_from_the_settings() -> None:
    workers = ImageWorkers.from_settings(Settings(_env_file=None, image_workers=3))
    try:
        assert workers.count == 3
    finally:
        workers.close()
    with pytest.raises(ValueError, match="at least one"):
        ImageWorkers(0)


def test_outsized_images_skip_webp_whose_encoder_holds_most_memory() -> None:
    big = Image.new("RGB", (3000, 3000), (10, 90, 200))
    assert big.width * big.height > WEBP_MAX_PIXELS
    buffer = io.BytesIO()
    big.save(buffer, "BMP")  # a type Discord cannot embed, so it is re-encoded whatever its size
    fitted = fit_under(buffer.getvalue(), "BMP", 10 * 1024 * 1024)
    assert (fitted.extension, fitted.width, fitted.reencoded) == ("jpg", 3000, True)

    small = io.BytesIO()
    Image.new("RGB", (600, 400), (10, 90, 200)).save(small, "BMP")
    assert fit_under(small.getvalue(), "BMP", 10 * 1024 * 1024).extension == "webp"
