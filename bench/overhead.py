"""Benchmark 2: our own time between "the result is known" and "the image is in the member's reply".

    .venv/bin/python -m bench.overhead               # 40 deliveries per case (~2 min)

The unmodified ImagineBot runs against the fake Discord and the emulator in
this process. For each job: from the moment the /result answer saying
"succeeded" arrives, to the moment Discord's answer to the edit carrying the
image arrives, minus the time spent moving bytes: the download's transfer
(download time less the Pillow check, which is our work) and the upload
request to Discord (multipart edit, sent until answered). What is left is our
own work: store writes, checks, re-encoding, rendering, queueing in the
courier. Two cases: the emulator's 2K PNG (~4.4 MiB, fits the 10 MiB limit as
is) and a 2K PNG of pure noise (~12 MiB), which the 10 MiB limit forces to be
re-encoded. A 5 ms sleeper measures the event loop's longest block meanwhile.
Jobs run one after another so each delivery is measured alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import random
import time
from collections.abc import Callable
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import discord.webhook.async_ as webhook_async
from aiohttp import web
from PIL import Image

from bench.common import bot_settings, out_dir, percentile, remove_database, table
from bot import download as download_module
from bot.app import ImagineBot
from bot.emulator import Duration, Emulator, EmulatorConfig
from bot.runcomfy import UpstreamState
from storage.models import JobState
from tests.fakediscord import FakeDiscord, FakeInteraction, FakeMessage
from tests.fakediscord.runner import run_bot

TOKEN = "bench-overhead-token"  # noqa: S105 (the emulator's stand-in token)


@lru_cache(maxsize=1)
def noise_png(side: int = 2048) -> bytes:
    """A 2K PNG that does not compress: over the 10 MiB a server without boosts accepts."""
    rng = random.Random(7)
    image = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


class NoisyEmulator(Emulator):
    """The emulator, serving the incompressible PNG as every result file."""

    async def _file(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=noise_png(), content_type="image/png")


class Stopwatch:
    """Loop times per request id / job, gathered by wrapping the calls that move bytes."""

    def __init__(self) -> None:
        self.known: dict[str, float] = {}
        self.download: dict[str, float] = {}
        self.inspect: list[float] = []
        self.uploads: list[tuple[float, float]] = []  # (start, end) of edits carrying files


def instrument(bot: ImagineBot, watch: Stopwatch) -> Callable[[], None]:
    """Wrap the client's result/download, Pillow's check and discord.py's webhook requests; returns an undo."""
    assert bot.jobs is not None
    client = bot.jobs.client
    loop = asyncio.get_running_loop()
    original_result, original_download = client.result, client.download_image
    original_inspect = download_module.inspect_image
    original_request = webhook_async.AsyncWebhookAdapter.request

    async def result(request_id: str, **kwargs: Any) -> Any:
        answer = await original_result(request_id, **kwargs)
        if answer.state is UpstreamState.SUCCEEDED:
            watch.known.setdefault(request_id, loop.time())
        return answer

    async def download_image(url: str) -> Any:
        started = loop.time()
        try:
            return await original_download(url)
        finally:
            watch.download[url.rsplit("/", 1)[-1].removesuffix(".png")] = loop.time() - started

    def inspect_image(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original_inspect(*args, **kwargs)
        finally:
            watch.inspect.append(time.perf_counter() - started)

    async def request(adapter: Any, *args: Any, **kwargs: Any) -> Any:
        started = loop.time()
        answer = await original_request(adapter, *args, **kwargs)
        if kwargs.get("files"):
            watch.uploads.append((started, loop.time()))
        return answer

    client.result = result  # type: ignore[method-assign]
    client.download_image = download_image  # type: ignore[method-assign]
    download_module.inspect_image = inspect_image
    # discord.py's internal webhook adapter, patched with a pass-through wrapper whose signature is looser than its own
    webhook_async.AsyncWebhookAdapter.request = request  # type: ignore[method-assign,assignment]

    def undo() -> None:
        download_module.inspect_image = original_inspect
        webhook_async.AsyncWebhookAdapter.request = original_request  # type: ignore[method-assign]

    return undo


def with_image(interaction: FakeInteraction) -> FakeMessage | None:
    """The interaction's reply once it carries an attachment."""
    message = interaction.original_message
    return message if message is not None and message.attachments else None


async def longest_block(stop: asyncio.Event, blocks: list[float], period: float = 0.005) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        before = loop.time()
        await asyncio.sleep(period)
        blocks.append(loop.time() - before - period)


async def measure(case: str, jobs: int, database: Path) -> dict[str, Any]:
    remove_database(database)
    config = EmulatorConfig(queue_time=Duration.constant(0.1), run_time=Duration.constant(0.3), full_size=True)
    emulator_class = NoisyEmulator if case == "noise" else Emulator
    if case == "noise":
        noise_png()  # made once, before the clock runs
    async with FakeDiscord() as fake, emulator_class(config, token=TOKEN, seed=5) as emulator:
        guild = fake.add_guild("Overhead", premium_tier=0)
        channel = guild.add_channel("images")
        member = guild.add_member("member")
        settings = bot_settings(
            fake,
            emulator.url,
            TOKEN,
            database,
            [guild.id],
            poll_min_interval_seconds=0.05,
            poll_max_interval_seconds=0.25,
        )
        bot = ImagineBot(settings, guild_ready_timeout=0.05)
        async with run_bot(fake, bot):
            assert bot.jobs is not None
            assert bot.store is not None
            await bot.store.guilds.update(guild.id, now=bot.jobs.clock.now(), member_daily=10 * jobs)
            watch = Stopwatch()
            undo = instrument(bot, watch)
            stop = asyncio.Event()
            blocks: list[float] = []
            sampler = asyncio.create_task(longest_block(stop, blocks))
            own: list[float] = []
            sizes: list[int] = []
            try:
                for index in range(jobs):
                    interaction = await member.run_command("imagine", channel, prompt=f"overhead {case} {index}")
                    message = await fake.wait_for(partial(with_image, interaction), timeout=60)
                    job = (await bot.store.jobs_for_user(member.id, limit=1))[0]
                    while job.state is not JobState.DELIVERED:
                        await asyncio.sleep(0.01)
                        job = await bot.store.get(job.id) or job
                    request_id = job.request_id or ""
                    upload_start, upload_end = watch.uploads[-1]
                    transfer = watch.download[request_id] - watch.inspect[-1]
                    own.append(upload_end - watch.known[request_id] - transfer - (upload_end - upload_start))
                    sizes.append(len(message.attachments[0].data))
            finally:
                stop.set()
                await sampler
                undo()
    return {
        "case": case,
        "jobs": jobs,
        "own p50 ms": 1000 * percentile(own, 50),
        "own p99 ms": 1000 * percentile(own, 99),
        "own max ms": 1000 * max(own),
        "longest loop block ms": 1000 * max(blocks),
        "loop lag p99 ms": 1000 * percentile(blocks, 99),
        "sent MiB": sum(sizes) / len(sizes) / 2**20,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=40, help="deliveries per case (default 40)")
    parser.add_argument("--cases", default="png,noise", help="png (4.4 MiB, as is) and/or noise (12 MiB, re-encoded)")
    args = parser.parse_args(argv)
    results = []
    for case in args.cases.split(","):
        result = asyncio.run(measure(case, args.jobs, out_dir() / f"overhead-{case}.sqlite3"))
        print(f"  {case}: own p50 {result['own p50 ms']:.1f} ms, p99 {result['own p99 ms']:.1f} ms", flush=True)
        results.append(result)
    labels = {"png": "2K PNG, sent as is", "noise": "2K noise PNG, re-encoded under 10 MiB"}
    rows = [
        [
            labels.get(r["case"], r["case"]),
            r["jobs"],
            r["own p50 ms"],
            r["own p99 ms"],
            r["longest loop block ms"],
            r["sent MiB"],
        ]
        for r in results
    ]
    print()
    print(table(["case", "jobs", "own p50 ms", "own p99 ms", "longest loop block ms", "sent MiB"], rows))
    with contextlib.suppress(OSError):
        (out_dir() / "overhead.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
