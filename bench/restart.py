"""Benchmark 4: kill the bot with 1,000 pending jobs, start it again, time the recovery.

    .venv/bin/python -m bench.restart                 # 1,000 jobs (~5 min at the default 10 req/s budget)
    .venv/bin/python -m bench.restart --jobs 200

The fake Discord and the emulator run here; the bot is the real `python -m bot`
in a child process, configured through its environment as a container is.
Members run /imagine until `--jobs` jobs are queued upstream (long queue waits
keep them there), the child is killed with SIGKILL (no shutdown code runs),
and a new one is started on the same SQLite file. Measured from the new
process's start: until it is healthy, until every job has been polled again
(the emulator's log of calls per request id), until the first reply is edited
(the fake's log of message edits), and how many jobs were submitted again
(must be none). The budget applies: with 10 requests/s, polling 1,000 jobs
once takes 100 s at the least.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from bench.common import free_port, healthy, out_dir, remove_database, table
from bot.emulator import Duration, Emulator, EmulatorConfig
from storage.models import JobState
from storage.sqlite import SQLiteJobStore
from tests.fakediscord import FakeDiscord

TOKEN = "bench-restart-token"  # noqa: S105 (the emulator's stand-in token)
ROOT = Path(__file__).resolve().parent.parent


class LoggingEmulator(Emulator):
    """The emulator, noting (loop time, route, request id) of every API call."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log: list[tuple[float, str, str]] = []

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        route = request.match_info.route.name or ""
        self.log.append((asyncio.get_running_loop().time(), route, request.match_info.get("request_id", "")))
        return await super()._middleware(request, handler)


async def start_bot(env: dict[str, str]) -> tuple[asyncio.subprocess.Process, int]:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "run",
        cwd=ROOT,
        env={**env, "HEALTH_PORT": str(port)},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return process, port


async def run(args: argparse.Namespace) -> dict[str, Any]:
    database = out_dir() / "restart.sqlite3"
    remove_database(database)
    config = EmulatorConfig(
        queue_time=Duration.uniform(args.queue_low, args.queue_high),
        run_time=Duration.lognormal(8.0, 0.3),
        seconds_per_queue_position=1.0,
    )
    loop = asyncio.get_running_loop()
    async with FakeDiscord() as fake, LoggingEmulator(config, token=TOKEN, seed=4) as emulator:
        guilds = [fake.add_guild(f"Restart {g}", premium_tier=0) for g in range(args.guilds)]
        places = [
            (guild.add_member(f"member-{i}"), guild.add_channel(f"images-{i}"))
            for guild in guilds
            for i in range(args.members // args.guilds)
        ]
        places = [
            places[g * (len(places) // args.guilds) + i]
            for i in range(len(places) // args.guilds)
            for g in range(args.guilds)
        ]
        async with await SQLiteJobStore.open(database) as store:  # migrate, and let everyone run at once
            for guild in guilds:
                await store.guilds.update(
                    guild.id,
                    now=datetime.now(UTC),
                    member_concurrent=args.jobs,
                    member_daily=10 * args.jobs,
                    guild_concurrent=2 * args.jobs,
                )
        env = {
            "DISCORD_TOKEN": fake.bot_token,
            "RUNCOMFY_API_TOKEN": TOKEN,
            "RUNCOMFY_BASE_URL": emulator.url,
            "RUNCOMFY_REQUESTS_PER_SECOND": str(args.budget),
            "DATABASE_PATH": str(database),
            "DISCORD_GUILD_IDS": ",".join(str(guild.id) for guild in guilds),
            "DISCORD_API_BASE_URL": fake.rest_base,
            "DISCORD_GATEWAY_URL": fake.gateway_url,
            "LOG_LEVEL": "WARNING",
            "BUDGET_IMAGES_PER_DAY": "0",  # the benchmark measures the restart, not the operator's caps
            "BUDGET_USD_PER_DAY": "0",
            "BUDGET_USD_PER_MONTH": "0",
        }
        first, port = await start_bot(env)
        try:
            await healthy(first, port)
            for index in range(args.jobs):
                member, channel = places[index % len(places)]
                await member.run_command("imagine", channel, prompt=f"restart job {index}")
                if index % 10 == 9:
                    await asyncio.sleep(10 / args.fill_rate)
            async with await SQLiteJobStore.open(database, read_only=True) as reader:
                fill_deadline = loop.time() + args.timeout
                while (states := await reader.count_by_state())[JobState.IN_QUEUE] < args.jobs:
                    if loop.time() > fill_deadline:
                        counts = {state.value: count for state, count in states.items() if count}
                        raise RuntimeError(f"only {counts} after {args.timeout:g} s of filling")
                    await asyncio.sleep(0.5)
            polled_once = {rid for _, route, rid in emulator.log if route == "status"}
            while len(polled_once) < args.jobs:
                await asyncio.sleep(0.5)
                polled_once = {rid for _, route, rid in emulator.log if route == "status"}
            print(f"{args.jobs} jobs queued and polled; killing the bot", flush=True)
        finally:
            first.kill()
            await first.wait()
        submits_before = len(emulator.submits)
        edits_before = len(fake.requests)

        started = loop.time()
        second, port = await start_bot(env)
        try:
            await healthy(second, port)
            became_healthy = loop.time() - started
            pending = {record.request_id for record in emulator.submits}
            deadline = started + args.timeout
            polled: dict[str, float] = {}
            first_edit: float | None = None
            while loop.time() < deadline and (len(polled) < len(pending) or first_edit is None):
                await asyncio.sleep(0.2)
                for at, route, rid in emulator.log:
                    if at >= started and route in ("status", "result") and rid not in polled:
                        polled[rid] = at - started
                if first_edit is None:
                    edits = [r.at for r in fake.requests[edits_before:] if r.method == "PATCH" and "messages" in r.key]
                    first_edit = min(edits) - started if edits else None
            resubmitted = len(emulator.submits) - submits_before
            all_polled = max(polled.values()) if len(polled) == len(pending) else float("nan")
        finally:
            second.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(second.wait(), 20)
            except TimeoutError:
                second.kill()
                await second.wait()
        return {
            "jobs pending at the kill": len(pending),
            "start → healthy s": became_healthy,
            "start → every job polled again s": all_polled,
            "jobs polled again": len(polled),
            "start → first reply edited s": first_edit if first_edit is not None else float("nan"),
            "jobs submitted again": resubmitted,
            "budget req/s": args.budget,
            "least time to poll all at the budget s": len(pending) / args.budget,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.restart", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--jobs", type=int, default=1000)
    add("--budget", type=float, default=10.0, help="RUNCOMFY_REQUESTS_PER_SECOND of the bot (default 10, production)")
    add("--guilds", type=int, default=10, help="servers the jobs are spread over (default 10)")
    add("--members", type=int, default=100, help="members (each with a channel), spread over the servers")
    add("--fill-rate", type=float, default=20.0, help="/imagine per second while filling (default 20)")
    add("--queue-low", type=float, default=600.0, help="shortest queue wait, s (default 600: all stay pending)")
    add("--queue-high", type=float, default=900.0)
    add("--timeout", type=float, default=300.0, help="give up waiting after the restart (s)")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    print()
    print(table(["figure", "value"], [[name, value] for name, value in result.items()]))
    (out_dir() / "restart.json").write_text(json.dumps(result, indent=2))
    return 0 if result["jobs submitted again"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
