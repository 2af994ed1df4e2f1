"""`python -m bot run`, unchanged, plus a 10 ms sleeper on its event loop that writes how late it wakes to a file.

    python -m bench.instrumented_bot LAG_FILE     # then as `python -m bot run`: settings from the environment

Why: the bot's own loop-lag histogram (`imagine_event_loop_lag_seconds` on
/metrics) samples every 0.5 s into buckets of 1, 5, 10, 25 and 50 ms, which
can tell whether a p99 is under 50 ms but not what it is. bench/scale.py
measures one in-process bot with a 10 ms sleeper; this gives a bot in a child
process the same probe, so the figures of one and of several processes are
measured alike. Each line of LAG_FILE is `<unix time> <seconds late>`,
written once a second.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from bot.__main__ import main as bot_main
from bot.app import ImagineBot

PERIOD = 0.01
_tasks: set[asyncio.Task[None]] = set()


async def record_lag(path: Path, period: float = PERIOD) -> None:
    """Sleep `period` again and again; note how much later than asked each sleep ended."""
    loop = asyncio.get_running_loop()
    batch: list[str] = []
    flushed = loop.time()
    with path.open("a", encoding="utf-8") as out:
        while True:
            before = loop.time()
            await asyncio.sleep(period)
            after = loop.time()
            batch.append(f"{time.time():.4f} {after - before - period:.6f}\n")
            if after - flushed >= 1.0:
                out.writelines(batch)
                out.flush()
                batch.clear()
                flushed = after


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python -m bench.instrumented_bot LAG_FILE\n")
        return 2
    path = Path(argv[0])
    setup_hook = ImagineBot.setup_hook

    async def instrumented(self: ImagineBot) -> None:
        await setup_hook(self)
        task = asyncio.create_task(record_lag(path), name="bench-loop-lag")
        _tasks.add(task)

    ImagineBot.setup_hook = instrumented  # type: ignore[method-assign]  # instrumentation only
    return bot_main(["run"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
