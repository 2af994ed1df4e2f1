"""Benchmark 3: 1,000 pending jobs, and members still getting answers; one bot, or several processes sharing them.

    .venv/bin/python -m bench.scale                              # one bot in this process, SQLite (~3 min)
    .venv/bin/python -m bench.scale --processes 3                # 3 `python -m bot run` sharing one PostgreSQL
    .venv/bin/python -m bench.scale --processes 1                # the same load on one such process
    .venv/bin/python -m bench.scale --processes 3 --own-budgets  # 3 processes, each its own database and budget
    .venv/bin/python -m bench.scale --jobs 200 --seconds 20

Members run /imagine until `--jobs` jobs are pending upstream (long queue
waits keep them pending), then for `--seconds` the benchmark samples
event-loop lag (a 10 ms sleeper's overshoot), RSS, CPU, the RunComfy request
rate against the budget (every API call the emulator receives; also over the
whole run, fill included), and the time
from each new INTERACTION_CREATE to its acknowledgement at the fake Discord (a
probe /imagine every `--probe-every` seconds). Real time.

Without `--processes` the unmodified ImagineBot runs in this process, on one
event loop with the fake Discord and the emulator (every figure is an upper
bound for the bot alone), on a SQLite file. With `--processes N` the bots are
N child processes (`bench/instrumented_bot.py`: `python -m bot run` plus the
10 ms sleeper writing to a file), process i running shard i of N, the servers
spread over the shards, all on one PostgreSQL database this benchmark starts
(tests/pgserver.py), so they share one request budget. `--own-budgets` gives
each its own database instead: N budgets, what several processes spent before
the budget was shared. Each child's /metrics loop-lag histogram is scraped
before and after the window too (its bucket holding the p99 is printed).

The bot in this process is bench/scale_bots.py, the child processes
bench/scale_processes.py, and what measures them bench/scale_gauges.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Sequence
from typing import Any

from bench.common import out_dir, percentile, table
from bench.scale_bots import TOKEN, Bots, in_process
from bench.scale_gauges import CountingEmulator, Place, max_in_window, probe_acks
from bench.scale_processes import children
from bot.emulator import Duration, EmulatorConfig
from storage.models import JobState
from tests.fakediscord import FakeDiscord, FakeGuild

GOALS = {"lag p99 ms": 50.0, "ack p99 ms": 100.0, "RSS MB": 150.0}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    config = EmulatorConfig(
        queue_time=Duration.uniform(args.queue_low, args.queue_high),
        run_time=Duration.lognormal(8.0, 0.3),
        seconds_per_queue_position=1.0,
    )
    async with FakeDiscord() as fake, CountingEmulator(config, token=TOKEN, seed=3) as emulator:
        shards = args.processes or 1
        guilds = [
            fake.add_guild(f"Scale {g}", premium_tier=0, on_shard=(g % shards, shards) if args.processes else None)
            for g in range(args.guilds)
        ]
        places = spread(guilds, args)
        start = children if args.processes else in_process
        async with start(args, fake, emulator, guilds) as bots:
            return await measure(args, fake, emulator, bots, places)


def spread(guilds: list[FakeGuild], args: argparse.Namespace) -> list[Place]:
    """(member, channel) pairs of each server, taking the servers in turn, so that consecutive commands go to
    different servers (and, with several processes, to different processes)."""
    per_guild = [
        [(guild.add_member(f"member-{i}"), channels[i % len(channels)]) for i in range(args.members // args.guilds)]
        for guild in guilds
        for channels in [[guild.add_channel(f"images-{i}") for i in range(args.channels // args.guilds)]]
    ]
    return [pairs[i] for i in range(len(per_guild[0])) for pairs in per_guild]


async def measure(
    args: argparse.Namespace, fake: FakeDiscord, emulator: CountingEmulator, bots: Bots, places: list[Place]
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    fill_started = loop.time()
    fills = []
    for index in range(args.jobs):
        member, channel = places[index % len(places)]
        fills.append(await member.run_command("imagine", channel, prompt=f"scale job {index}"))
        if index % args.fill_batch == args.fill_batch - 1:
            await asyncio.sleep(args.fill_batch / args.fill_rate)
    while (states := await bots.states()).get(JobState.IN_QUEUE.value, 0) < args.jobs:
        if loop.time() - fill_started > args.fill_timeout:
            counts = {state: count for state, count in states.items() if count}
            raise RuntimeError(f"only {counts} after {args.fill_timeout:g} s; failed: {fake.failed_interactions}")
        await asyncio.sleep(0.2)
    fill_seconds = loop.time() - fill_started
    print(f"{args.jobs} jobs pending after {fill_seconds:.1f} s; measuring for {args.seconds:g} s", flush=True)

    stop = asyncio.Event()
    acks: list[tuple[Place, float]] = []
    calls_before = len(emulator.stamps)
    rate_limited_before = fake.rate_limited_count
    await bots.begin()
    wall_before = loop.time()
    probes = asyncio.create_task(probe_acks(acks, stop, args.probe_every, places))
    end = loop.time() + args.seconds
    while loop.time() < end:
        bots.sample()
        await asyncio.sleep(1.0)
    stop.set()
    wall = loop.time() - wall_before
    own = await bots.end(wall)
    await probes
    window = [s for s in emulator.stamps[calls_before:] if s <= wall_before + wall]
    states = await bots.states()
    fill_acks = [i.acked_at - i.created_at for i in fills if i.acked_at is not None]
    ack_values = [ack for _, ack in acks]
    per_process = [
        [ack for (member, _), ack in acks if bots.process_of(member.guild) == index] for index in range(bots.count)
    ]
    result: dict[str, Any] = {
        "processes": args.processes or "1, in this process",
        "jobs pending": states.get(JobState.IN_QUEUE.value, 0) + states.get(JobState.IN_PROGRESS.value, 0),
        "fill s": fill_seconds,
        "lag p50 ms": own.pop("lag p50 ms"),
        "lag p99 ms": own.pop("lag p99 ms"),
        "lag max ms": own.pop("lag max ms"),
        "ack p50 ms": 1000 * percentile(ack_values, 50),
        "ack p99 ms": 1000 * percentile(ack_values, 99),
        "acks measured": len(acks),
        "fill ack p99 ms": 1000 * percentile(fill_acks, 99),
    }
    if bots.count > 1:
        result["ack p99 ms per process"] = [round(1000 * percentile(values, 99), 1) for values in per_process]
    result |= own
    result |= {
        "RunComfy req/s (mean)": len(window) / wall,
        "RunComfy req in busiest 1 s": max_in_window(window),
        "RunComfy req/s in busiest 10 s": max_in_window(window, 10.0) / 10,
        "RunComfy req/s (mean, whole run)": len(emulator.stamps) / (emulator.stamps[-1] - emulator.stamps[0]),
        "RunComfy req in busiest 1 s (whole run)": max_in_window(emulator.stamps),
        "budget req/s": args.budget,
        "Discord 429s": fake.rate_limited_count - rate_limited_before,
        "Discord 429s (whole run)": fake.rate_limited_count,
        "failed interactions": len(fake.failed_interactions),
    }
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--processes", type=int, default=0, help="bot child processes on PostgreSQL (default: one bot in this one)")
    add("--own-budgets", action="store_true", help="with --processes: a database, so a budget, per process")
    add("--budget", type=float, default=10.0, help="RUNCOMFY_REQUESTS_PER_SECOND (default 10, production)")
    add("--jobs", type=int, default=1000, help="pending jobs to hold (default 1000)")
    add("--seconds", type=float, default=60.0, help="measured window (default 60)")
    add("--guilds", type=int, default=10, help="servers the jobs are spread over (default 10)")
    add("--channels", type=int, default=30, help="channels, spread over the servers (default 30)")
    add("--members", type=int, default=100, help="members asking, spread over the servers (default 100)")
    add("--fill-rate", type=float, default=20.0, help="/imagine per second while filling (default 20)")
    add("--fill-batch", type=int, default=10)
    add("--fill-timeout", type=float, default=240.0, help="give up filling after this many seconds")
    add("--probe-every", type=float, default=0.5, help="seconds between probe /imagine (default 0.5)")
    add("--queue-low", type=float, default=300.0, help="shortest queue wait, s (default 300: all stay pending)")
    add("--queue-high", type=float, default=600.0)
    add("--tag", default="", help="suffix of bench/out/scale*.json")
    return parser


def verdicts(result: dict[str, Any], args: argparse.Namespace) -> list[list[object]]:
    rows: list[list[object]] = [
        [name, goal, result[name], "met" if result[name] < goal else "NOT MET"] for name, goal in GOALS.items()
    ]
    rows.append(
        [
            "Discord 429s",
            0,
            result["Discord 429s (whole run)"],
            "met" if result["Discord 429s (whole run)"] == 0 else "NOT MET",
        ]
    )
    budget = result["budget req/s"]
    if not args.processes:
        # At exactly r requests/s some window of T seconds holds r*T + 1 of them (both ends): that one is allowed.
        checks: Sequence[tuple[int, str, float]] = [
            (1, "let through by our limiter in busiest 1 s", int(budget) + 1),
            (10, "let through by our limiter in busiest 10 s", int(budget * 10) + 1),
        ]
    else:
        # The shared budget is a token bucket holding one second's worth: any T seconds may see a full bucket
        # plus T seconds of refill, counted here where the requests arrive (the emulator).
        checks = [
            (1, "RunComfy req in busiest 1 s", budget + budget),
            (10, "RunComfy req/s in busiest 10 s", (budget + budget * 10) / 10),
        ]
    for seconds, name, limit in checks:
        verdict = "met" if result[name] <= limit else "NOT MET"
        rows.append([f"RunComfy budget, {seconds} s", limit, result[name], verdict])
    return rows


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = asyncio.run(run(args))
    rows = [[name, " ".join(map(str, value)) if isinstance(value, list) else value] for name, value in result.items()]
    print()
    print(table(["figure", "value"], rows))
    print()
    print(table(["goal", "limit", "measured", "verdict"], verdicts(result, args)))
    mode = f"-{args.processes}p" + ("-own-budgets" if args.own_budgets else "") if args.processes else ""
    (out_dir() / f"scale{mode}{args.tag}.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
