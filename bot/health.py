"""`/healthz` and `/metrics` over HTTP, and `python -m bot health`, the probe Docker runs.

Off unless `HEALTH_PORT` is set; binds `HEALTH_HOST` (127.0.0.1 by default, so
nothing outside the machine or container sees it). `/healthz` asks the running
bot three questions: is every gateway connection up, does the database answer,
is the job scheduler alive. 200 when all three hold, 503 (with the failing
ones named) otherwise or while shutting down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot.jobs import JobManager
from bot.metrics import BotMetrics
from bot.settings import Settings
from storage.open import AnyJobStore
from storage.sqlite import StoreUnavailableError

log = logging.getLogger(__name__)

DATABASE_TIMEOUT = 2.0
PROBE_TIMEOUT = 5.0


class EndpointUnavailableError(Exception):
    """HEALTH_HOST:HEALTH_PORT cannot be listened on (in use, or not an address of this machine)."""


class Monitored(Protocol):
    """What the endpoint reads from the bot (ImagineBot provides it)."""

    store: AnyJobStore | None
    jobs: JobManager | None
    metrics: BotMetrics
    stopping: bool

    def gateway_connected(self) -> bool: ...

    @property
    def gateway_latency(self) -> float | None: ...


@dataclass
class HealthReport:
    status: str  # "ok", "failing" or "stopping"
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def as_json(self) -> dict[str, Any]:
        return {"status": self.status, "checks": self.checks}


async def check(bot: Monitored) -> HealthReport:
    """Ask the bot the three questions; also refreshes the gauges that /metrics reads."""
    checks: dict[str, dict[str, Any]] = {}
    connected = bot.gateway_connected()
    latency = bot.gateway_latency
    checks["gateway"] = {"ok": connected}
    if latency is not None:
        checks["gateway"]["latency_ms"] = round(latency * 1000)
    bot.metrics.gateway_connected.set(1 if connected else 0)
    if latency is not None:
        bot.metrics.gateway_latency.set(latency)

    database: dict[str, Any] = {"ok": False}
    if bot.store is None:
        database["error"] = "not open yet"
    else:
        try:
            counts = await asyncio.wait_for(bot.store.count_unfinished_by_state(), DATABASE_TIMEOUT)
        except StoreUnavailableError as error:
            database["error"] = error.reason
        except TimeoutError:
            database["error"] = f"no answer within {DATABASE_TIMEOUT:g} s"
        except Exception as error:  # a closed connection raises ValueError; report, never crash the probe
            database["error"] = type(error).__name__
        else:
            database.update(ok=True, schema_version=bot.store.schema_version)
            bot.metrics.set_job_counts(counts)
            if bot.jobs is not None:
                with contextlib.suppress(StoreUnavailableError, TimeoutError):  # the counts above said enough
                    bot.metrics.set_budget(await asyncio.wait_for(bot.jobs.budget.state(), DATABASE_TIMEOUT))
    checks["database"] = database

    jobs = bot.jobs
    alive = jobs is not None and jobs.alive
    checks["scheduler"] = {"ok": alive, "pending": jobs.pending if jobs is not None else 0}
    if jobs is not None:
        bot.metrics.scheduled.set(jobs.pending)
        if jobs.keeper is not None:
            bot.metrics.taken_over.set(jobs.keeper.taken_over)

    if bot.stopping:
        status = "stopping"
    elif all(item["ok"] for item in checks.values()):
        status = "ok"
    else:
        status = "failing"
    return HealthReport(status, checks)


class HealthServer:
    """The aiohttp app serving /healthz and /metrics for one bot."""

    def __init__(self, bot: Monitored, host: str, port: int) -> None:
        self.bot = bot
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._lag_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.requested_port)
        try:
            await site.start()
        except OSError as error:
            await self._runner.cleanup()
            self._runner = None
            reason = error.strerror or type(error).__name__
            raise EndpointUnavailableError(
                f"HEALTH_PORT: cannot listen on {self.host}:{self.requested_port} ({reason})"
            ) from None
        self.port = int(self._runner.addresses[0][1])
        self._lag_task = asyncio.create_task(self.bot.metrics.watch_loop_lag(), name="event-loop-lag")
        log.info("health endpoint on http://%s:%d/healthz (metrics at /metrics)", self.host, self.port)

    async def close(self) -> None:
        if self._lag_task is not None:
            self._lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lag_task
            self._lag_task = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        report = await check(self.bot)
        return web.json_response(report.as_json(), status=200 if report.ok else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        await check(self.bot)  # refreshes the job, scheduler and gateway gauges
        body = generate_latest(self.bot.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def probe_url(settings: Settings) -> str:
    """Where `python -m bot health` asks: the configured port on this machine (0.0.0.0 means any, so loopback)."""
    host = settings.health_host
    if host in ("0.0.0.0", "", "::"):  # noqa: S104 - reading the setting, not binding
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.health_port}/healthz"


async def probe(settings: Settings, out: TextIO) -> int:
    """`python -m bot health`: 0 when the running bot says it is healthy, 1 otherwise (one line either way)."""
    url = probe_url(settings)
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT)) as session,
            session.get(url) as response,
        ):
            body = await response.json(content_type=None)
            status = response.status
    except (aiohttp.ClientError, TimeoutError, ValueError) as error:
        out.write(f"unhealthy: no answer from {url} ({type(error).__name__}); is the bot running?\n")
        return 1
    checks = body.get("checks", {}) if isinstance(body, dict) else {}
    failing = sorted(name for name, item in checks.items() if isinstance(item, dict) and not item.get("ok"))
    if status == 200:
        out.write("healthy: gateway connected, database answering, scheduler alive\n")
        return 0
    state = body.get("status") if isinstance(body, dict) else None
    detail = f"failing: {', '.join(failing)}" if failing else (state or f"HTTP {status}")
    out.write(f"unhealthy: {detail}\n")
    return 1
