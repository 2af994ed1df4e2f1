"""Benchmark: peak memory of one image check and one re-encode, per pixel (what the README's bound uses).

    .venv/bin/python -m bench.image_memory [--megapixels 16]

Each step runs in a fresh child process and reports its peak resident memory
above the baseline of a process that has loaded Pillow and the source file's
bytes, divided by the pixel count: the bytes per pixel one image worker
holds at its worst (Linux: the peak is reset through /proc/self/clear_refs
after the bytes are loaded). The source is RGBA noise (4 bytes per decoded pixel, and
it does not compress, so the re-encode cannot stop early).
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image


def _child(step: str, path: str) -> None:
    from bot.download import inspect_image
    from bot.images import fit_under

    data = Path(path).read_bytes()
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to what is resident now
    before = _status("VmRSS")
    if step == "inspect":
        inspect_image(data, max_pixels=10**9)
    elif step == "fit":
        fit_under(data, "PNG", 8 * 1024 * 1024)
    print(_status("VmHWM") - before)


def _status(field: str) -> int:
    """A memory figure of this process from /proc/self/status, in bytes (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise LookupError(field)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--megapixels", type=float, default=16.0)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    side = int((args.megapixels * 1_000_000) ** 0.5)
    pixels = side * side
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "noise.png"
        buffer = io.BytesIO()
        Image.frombytes("RGBA", (side, side), os.urandom(pixels * 4)).save(buffer, "PNG", compress_level=1)
        path.write_bytes(buffer.getvalue())
        print(f"{side}x{side} RGBA noise ({pixels / 1e6:.1f} MP), PNG {path.stat().st_size / 2**20:.0f} MiB")
        for step in ("inspect", "fit"):
            output = subprocess.run(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "bench.image_memory", "--child", step, str(path)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            grown = int(output.strip().splitlines()[-1])
            print(f"  {step:8} peak +{grown / 2**20:7.0f} MiB = {grown / pixels:4.1f} bytes per pixel")


if __name__ == "__main__":
    main()
