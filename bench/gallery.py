"""Benchmark: what a gallery costs the delivery stage: fitting N full-size images under Discord's limits.

    .venv/bin/python -m bench.gallery [--images 4] [--ratio 1:1]

Renders N full-size emulator images (about 4 MP each, seeded noise, so they
compress like photographs do not), then fits each under the per-file budget
the Discord destination uses for N files (`per_file_limit`: the upload limit,
or the request's 25 MiB shared out) on the IMAGE_WORKERS threads, as a
delivery does. Prints the sizes before and after, the time, and the peak
resident memory the process reached (Linux VmHWM), so the README's memory
bound can be checked against a gallery.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from bot.emulator_images import render_png
from bot.images import ImageWorkers
from cogs.delivery import DEFAULT_UPLOAD_LIMIT, per_file_limit

MIB = 1024 * 1024


def _peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run(images: int, ratio: str, workers: int, upload_limit: int) -> None:
    started = time.perf_counter()
    sources = [render_png(f"gallery image {n}", n, ratio, full_size=True) for n in range(images)]
    rendered = time.perf_counter() - started
    budget = per_file_limit(upload_limit, images)
    pool = ImageWorkers(workers)
    started = time.perf_counter()
    fitted = [await pool.fit_under(data, "PNG", budget) for data in sources]  # one after another, as delivery does
    took = time.perf_counter() - started
    pool.close()
    print(f"{images} images at {ratio}, full size; per-file budget {budget / MIB:.2f} MiB ({workers} workers)")
    print(f"  sources: {', '.join(f'{len(data) / MIB:.2f}' for data in sources)} MiB (rendered in {rendered:.1f} s)")
    print(f"  fitted:  {', '.join(f'{len(one.data) / MIB:.2f} {one.extension}' for one in fitted)} MiB")
    total = sum(len(one.data) for one in fitted)
    print(f"  request: {total / MIB:.2f} MiB of 25 MiB; fitting took {took:.2f} s ({took / images:.2f} s per image)")
    print(f"  peak resident memory of this process: {_peak_mib():.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--ratio", default="1:1")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--upload-limit", type=float, default=DEFAULT_UPLOAD_LIMIT / MIB, help="per-file limit in MiB (default 10)"
    )
    args = parser.parse_args()
    asyncio.run(run(args.images, args.ratio, args.workers, int(args.upload_limit * MIB)))


if __name__ == "__main__":
    main()
