"""Benchmark 3: one bot process with 1,000 pending jobs, and members still getting answers.

    .venv/bin/python -m bench.scale                 # 1,000 jobs, 60 s measured (~2 min)
    .venv/bin/python -m bench.scale --jobs 200 --seconds 20

The unmodified ImagineBot runs against the fake Discord and the emulator, all
in this one process and on one event loop (so every figure includes the fake's
and the emulator's own work: an upper bound for the bot alone). Members run
/imagine until `--jobs` jobs are pending upstream (long queue waits keep them
pending), then for `--seconds` the benchmark samples event-loop lag (a 10 ms
sleeper's overshoot), RSS, CPU, the RunComfy request rate against the budget,
and the time from each new INTERACTION_CREATE to its acknowledgement (a probe
/imagine every `--probe-every` seconds). Real time, real SQLite file on disk.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from bench.common import out_dir, percentile, remove_database, table
from bot.app import ImagineBot
from bot.emulator import Duration, Emulator, EmulatorConfig
from bot.emulator_config import API_ROUTES
from bot.settings import Settings
from storage.models import JobState
from tests.fakediscord import FakeDiscord, FakeInteraction
from tests.fakediscord.runner import run_bot

TOKEN = "bench-scale-token"  # noqa: S105 (the emulator's stand-in token)
GOALS = {"lag p99 ms": 50.0, "ack p99 ms": 100.0, "RSS MB": 150.0}


class CountingEmulator(Emulator):
    """The emulator, noting the loop time of every API call (not file downloads)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stamps: list[float] = []

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if (request.match_info.route.name or "") in API_ROUTES:
            self.stamps.append(asyncio.get_running_loop().time())
        return await super()._middleware(request, handler)


def watch_limiter(bot: ImagineBot) -> list[float]:
    """Loop times at which the bot's own RunComfy limiter lets a request go (instrumentation only)."""
    assert bot.jobs is not None
    limiter = bot.jobs.client._limiter  # the one shared limiter built in setup_hook
    assert limiter is not None
    released: list[float] = []
    original = limiter.acquire
    loop = asyncio.get_running_loop()

    async def acquire(amount: float = 1) -> None:
        await original(amount)
        released.append(loop.time())

    limiter.acquire = acquire
    return released


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def max_in_window(stamps: list[float], window: float = 1.0) -> int:
    best, start = 0, 0
    for end, stamp in enumerate(stamps):
        while stamp - stamps[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


async def sample_lag(lags: list[float], stop: asyncio.Event, period: float = 0.01) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        before = loop.time()
        await asyncio.sleep(period)
        lags.append(loop.time() - before - period)


async def probe_acks(acks: list[float], stop: asyncio.Event, every: float, places: list[tuple[Any, Any]]) -> None:
    index = 0
    pending: list[FakeInteraction] = []
    while not stop.is_set():
        member, channel = places[index % len(places)]
        pending.append(await member.run_command("imagine", channel, prompt=f"probe {index}"))
        index += 1
        await asyncio.sleep(every)
    for interaction in pending:
        with contextlib.suppress(TimeoutError):
            await interaction.wait_until_acked(timeout=10)
        if interaction.acked_at is not None:
            acks.append(interaction.acked_at - interaction.created_at)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    out = out_dir()
    database = out / "scale.sqlite3"
    remove_database(database)
    config = EmulatorConfig(
        queue_time=Duration.uniform(args.queue_low, args.queue_high),
        run_time=Duration.lognormal(8.0, 0.3),
        seconds_per_queue_position=1.0,
    )
    async with FakeDiscord() as fake, CountingEmulator(config, token=TOKEN, seed=3) as emulator:
        guilds = [fake.add_guild(f"Scale {g}", premium_tier=0) for g in range(args.guilds)]
        channels = [guild.add_channel(f"images-{i}") for guild in guilds for i in range(args.channels // args.guilds)]
        members = [guild.add_member(f"member-{i}") for guild in guilds for i in range(args.members // args.guilds)]
        # Member i of guild g is at index g * per_guild + i; pair each member with a channel of its own guild.
        places = [
            (
                members[g * len(members) // args.guilds + i % (len(members) // args.guilds)],
                channels[g * len(channels) // args.guilds + i % (len(channels) // args.guilds)],
            )
            for i in range(max(len(members), len(channels)) // args.guilds)
            for g in range(args.guilds)
        ]
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]  # pydantic-settings' documented test override
            discord_token=fake.bot_token,
            runcomfy_api_token=TOKEN,
            runcomfy_base_url=emulator.url,
            database_path=database,
            discord_guild_ids=[guild.id for guild in guilds],
            discord_api_base_url=fake.rest_base,
            discord_gateway_url=fake.gateway_url,
            budget_images_per_day=0,  # the benchmark measures the bot, not the operator's caps
            budget_usd_per_day=0,
            budget_usd_per_month=0,
        )
        bot = ImagineBot(settings, guild_ready_timeout=0.05)
        async with run_bot(fake, bot):
            assert bot.jobs is not None
            assert bot.store is not None
            loop = asyncio.get_running_loop()
            # One big server that lets everyone run at once: every job goes upstream, none waits in the bot.
            released = watch_limiter(bot)
            for guild in guilds:
                await bot.store.guilds.update(
                    guild.id,
                    now=bot.jobs.clock.now(),
                    member_concurrent=args.jobs,
                    member_daily=10 * args.jobs,
                    guild_concurrent=2 * args.jobs,
                )
            fill_started = loop.time()
            fills = []
            for index in range(args.jobs):
                member, channel = places[index % len(places)]
                fills.append(await member.run_command("imagine", channel, prompt=f"scale job {index}"))
                if index % args.fill_batch == args.fill_batch - 1:
                    await asyncio.sleep(args.fill_batch / args.fill_rate)
            while (states := await bot.store.count_by_state())[JobState.IN_QUEUE] < args.jobs:
                if loop.time() - fill_started > args.fill_timeout:
                    counts = {state.value: count for state, count in states.items() if count}
                    raise RuntimeError(
                        f"only {counts} after {args.fill_timeout:g} s; failed: {fake.failed_interactions}"
                    )
                await asyncio.sleep(0.2)
            fill_seconds = loop.time() - fill_started
            print(f"{args.jobs} jobs pending after {fill_seconds:.1f} s; measuring for {args.seconds:g} s", flush=True)

            stop = asyncio.Event()
            lags: list[float] = []
            acks: list[float] = []
            calls_before = len(emulator.stamps)
            rate_limited_before = fake.rate_limited_count
            cpu_before, wall_before = time.process_time(), loop.time()
            rss_samples: list[float] = []
            tasks = [
                asyncio.create_task(sample_lag(lags, stop)),
                asyncio.create_task(probe_acks(acks, stop, args.probe_every, places)),
            ]
            end = loop.time() + args.seconds
            while loop.time() < end:
                rss_samples.append(rss_mb())
                await asyncio.sleep(1.0)
            stop.set()
            await asyncio.gather(*tasks)
            cpu = time.process_time() - cpu_before
            wall = loop.time() - wall_before
            window = [s for s in emulator.stamps[calls_before:] if s <= wall_before + wall]
            let_through = [s for s in released if wall_before <= s <= wall_before + wall]
            states = await bot.store.count_by_state()
            pending = states[JobState.IN_QUEUE] + states[JobState.IN_PROGRESS]
            fill_acks = [i.acked_at - i.created_at for i in fills if i.acked_at is not None]
            result = {
                "jobs pending": pending,
                "lag p50 ms": 1000 * percentile(lags, 50),
                "lag p99 ms": 1000 * percentile(lags, 99),
                "lag max ms": 1000 * max(lags),
                "ack p50 ms": 1000 * percentile(acks, 50),
                "ack p99 ms": 1000 * percentile(acks, 99),
                "acks measured": len(acks),
                "fill ack p99 ms": 1000 * percentile(fill_acks, 99),
                "RSS MB": max(rss_samples),
                "peak RSS MB": peak_rss_mb(),
                "CPU share of one core": cpu / wall,
                "RunComfy req/s (mean)": len(window) / wall,
                "RunComfy req in busiest 1 s": max_in_window(window),
                "RunComfy req/s in busiest 10 s": max_in_window(window, 10.0) / 10,
                "let through by our limiter in busiest 1 s": max_in_window(let_through),
                "let through by our limiter in busiest 10 s": max_in_window(let_through, 10.0),
                "budget req/s": settings.runcomfy_requests_per_second,
                "Discord 429s": fake.rate_limited_count - rate_limited_before,
                "Discord 429s (whole run)": fake.rate_limited_count,
                "failed interactions": len(fake.failed_interactions),
            }
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--jobs", type=int, default=1000, help="pending jobs to hold (default 1000)")
    add("--seconds", type=float, default=60.0, help="measured window (default 60)")
    add("--guilds", type=int, default=10, help="servers the jobs are spread over (default 10)")
    add("--channels", type=int, default=30, help="channels, spread over the servers (default 30)")
    add("--members", type=int, default=100, help="members asking, spread over the servers (default 100)")
    add("--fill-rate", type=float, default=20.0, help="/imagine per second while filling (default 20)")
    add("--fill-batch", type=int, default=10)
    add("--fill-timeout", type=float, default=180.0, help="give up filling after this many seconds")
    add("--probe-every", type=float, default=0.5, help="seconds between probe /imagine (default 0.5)")
    add("--queue-low", type=float, default=300.0, help="shortest queue wait, s (default 300: all stay pending)")
    add("--queue-high", type=float, default=600.0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = asyncio.run(run(args))
    rows = [[name, value] for name, value in result.items()]
    print()
    print(table(["figure", "value"], rows))
    verdicts = [[name, goal, result[name], "met" if result[name] < goal else "NOT MET"] for name, goal in GOALS.items()]
    verdicts.append(
        [
            "Discord 429s",
            0,
            result["Discord 429s (whole run)"],
            "met" if result["Discord 429s (whole run)"] == 0 else "NOT MET",
        ]
    )
    # At exactly r requests/s some window of T seconds holds r*T + 1 of them (both ends): that one is allowed.
    budget = result["budget req/s"]
    for seconds, name in (
        (1, "let through by our limiter in busiest 1 s"),
        (10, "let through by our limiter in busiest 10 s"),
    ):
        limit = int(budget * seconds) + 1
        verdicts.append(
            [f"RunComfy budget, {seconds} s", limit, result[name], "met" if result[name] <= limit else "NOT MET"]
        )
    print()
    print(table(["goal", "limit", "measured", "verdict"], verdicts))
    (out_dir() / "scale.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
