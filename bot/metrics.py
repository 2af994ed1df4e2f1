"""Prometheus metrics of one bot process, collected from what already exists.

Nothing here reaches into the job manager: job counts by state come from the
store at scrape time, outcomes and latencies from a job-event subscriber,
RunComfy calls and errors from a thin subclass of the client, Discord 429s
from an aiohttp trace on discord.py's own session (its `http_trace` option),
event-loop lag from a timer that measures how late it wakes.

Labels are small fixed vocabularies (states, operations, error kinds, status
codes): never a token, a URL, a prompt or an id.
"""

from __future__ import annotations

import asyncio
import re
from collections import OrderedDict
from collections.abc import Awaitable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import SecretStr

from bot.download import DownloadedImage
from bot.images import ImageWorkers
from bot.jobs import BudgetState
from bot.jobs.events import (
    DeliveryDelayed,
    JobCancelled,
    JobDelivered,
    JobEvent,
    JobFailed,
    JobUndeliverable,
    NoticeLost,
    NoticeShown,
)
from bot.runcomfy import (
    CancelResult,
    Limiter,
    ModelInfo,
    RequestResult,
    RequestStatus,
    RunComfyClient,
    RunComfyError,
    Submitted,
    TransientError,
    UpstreamState,
)
from bot.settings import Settings
from storage.models import JobState

T = TypeVar("T")

DISCORD_RATE_LIMIT_SCOPES = frozenset({"user", "global", "shared"})
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def error_kind(error: RunComfyError) -> str:
    """A label for an error: `rate_limited`, `server_error`, `timeout_or_connection`, else the class (`auth`...)."""
    if type(error).__name__ == "_NotSentError":
        return "connection"
    if isinstance(error, TransientError) and type(error) is TransientError:
        if error.status == 429:
            return "rate_limited"
        if error.status is not None and error.status >= 500:
            return "server_error"
        if error.status is None:
            return "timeout_or_connection"
        return "transient"
    name = type(error).__name__.removesuffix("Error") or "unknown"
    return _CAMEL.sub("_", name).lower()


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            moment = datetime.fromtimestamp(float(value), UTC)
        except (ValueError, OverflowError, OSError):
            return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class _RequestCountCollector(Collector):
    """`imagine_runcomfy_http_requests_total` straight from the client's own counter."""

    def __init__(self) -> None:
        self.client: RunComfyClient | None = None

    def collect(self) -> Iterable[Metric]:
        count = self.client.request_count if self.client is not None else 0
        yield CounterMetricFamily(
            "imagine_runcomfy_http_requests",
            "HTTP requests sent to RunComfy and its file host (retries and downloads included).",
            value=count,
        )


class BotMetrics:
    """The registry and every metric of one bot; a registry per bot keeps tests independent."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.jobs = Gauge(
            "imagine_jobs",
            "Live jobs in the database, by state (endings are counted by imagine_jobs_finished_total).",
            ["state"],
            registry=registry,
        )
        self.scheduled = Gauge(
            "imagine_jobs_scheduled", "Jobs this process's scheduler is waiting on or stepping.", registry=registry
        )
        self.finished = Counter(
            "imagine_jobs_finished",
            "Jobs that ended in this process, by outcome (delivered, undeliverable, failed, not_started, cancelled).",
            ["outcome"],
            registry=registry,
        )
        self.delivery_delayed = Counter(
            "imagine_delivery_delayed",
            "Delivery attempts (of an image or an end notice) that did not get through and will be retried.",
            registry=registry,
        )
        self.notices = Counter(
            "imagine_notices",
            "Ends of failed or cancelled jobs told to members (shown) or not (lost: the reply was gone).",
            ["outcome"],
            registry=registry,
        )
        self.calls = Counter(
            "imagine_runcomfy_calls",
            "RunComfy API calls by operation (submit, status, result, cancel, model_info, download); "
            "retries inside one call are not counted again.",
            ["operation"],
            registry=registry,
        )
        self.errors = Counter(
            "imagine_runcomfy_errors",
            "RunComfy calls that failed, by operation and kind (rate_limited, server_error, auth, ...).",
            ["operation", "kind"],
            registry=registry,
        )
        self.discord_rate_limited = Counter(
            "imagine_discord_rate_limited",
            "429 answers from Discord's REST API, by scope (discord.py waits and retries).",
            ["scope"],
            registry=registry,
        )
        self.discord_errors = Counter(
            "imagine_discord_http_errors",
            "Discord REST answers with status 400 or more, by status.",
            ["status"],
            registry=registry,
        )
        self.detection_delay = Histogram(
            "imagine_detection_delay_seconds",
            "From RunComfy finishing a job (its finished_at) to the bot reading the result.",
            buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 60.0),
            registry=registry,
        )
        self.end_to_end = Histogram(
            "imagine_end_to_end_seconds",
            "From the command to the image delivered in Discord.",
            buckets=(2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 300.0, 900.0),
            registry=registry,
        )
        self.loop_lag = Histogram(
            "imagine_event_loop_lag_seconds",
            "How late the event loop runs a timer: time spent blocked by synchronous work.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=registry,
        )
        self.gateway_connected = Gauge(
            "imagine_gateway_connected", "1 while every gateway connection of this process is up.", registry=registry
        )
        self.gateway_latency = Gauge(
            "imagine_gateway_latency_seconds", "Gateway heartbeat round trip (average over shards).", registry=registry
        )
        self.budget_used = Gauge(
            "imagine_budget_used",
            "The whole bot's use of its operator's budget, by window: images today, USD today, USD this month.",
            ["window"],
            registry=registry,
        )
        self.taken_over = Gauge(
            "imagine_jobs_taken_over",
            "With DATABASE_URL: jobs this process took over from processes that stopped, since it started.",
            registry=registry,
        )
        self.budget_limit = Gauge(
            "imagine_budget_limit", "The operator's caps (0: none), by window.", ["window"], registry=registry
        )
        self._requests = _RequestCountCollector()
        registry.register(self._requests)
        for state in JobState:
            if not state.is_final:
                self.jobs.labels(state.value)
        for outcome in ("delivered", "undeliverable", "failed", "not_started", "cancelled"):
            self.finished.labels(outcome)
        for outcome in ("shown", "lost"):
            self.notices.labels(outcome)

    # -- sources ------------------------------------------------------------

    def watch_client(self, client: RunComfyClient) -> None:
        self._requests.client = client

    def set_budget(self, state: BudgetState) -> None:
        budget = state.budget
        for window, used, limit in (
            ("images_today", state.today.images, budget.images_per_day),
            ("usd_today", state.spent_today, budget.usd_per_day),
            ("usd_month", state.spent_this_month, budget.usd_per_month),
        ):
            self.budget_used.labels(window).set(used)
            self.budget_limit.labels(window).set(limit)

    def set_job_counts(self, counts: Mapping[JobState, int]) -> None:
        """Live jobs by state; a state absent from `counts` has none."""
        for state in JobState:
            if not state.is_final:
                self.jobs.labels(state.value).set(counts.get(state, 0))

    def on_job_event(self, event: JobEvent) -> None:
        """A job-manager listener: every ending, every delivery that had to wait, and the end-to-end time."""
        if isinstance(event, JobDelivered):
            self.finished.labels("delivered").inc()
            end = event.job.finished_at or datetime.now(UTC)
            self.end_to_end.observe(max(0.0, (end - event.job.created_at).total_seconds()))
        elif isinstance(event, JobUndeliverable):
            self.finished.labels("undeliverable").inc()
        elif isinstance(event, JobFailed):
            # Ended before RunComfy heard of it and with nobody to tell (an acknowledgement Discord did not take, a
            # member's image refused once read): the member's doing or Discord's, not a failure to alert on.
            quiet = event.job.request_id is None and event.job.deliver_at is None
            self.finished.labels("not_started" if quiet else "failed").inc()
        elif isinstance(event, JobCancelled):
            self.finished.labels("cancelled").inc()
        elif isinstance(event, DeliveryDelayed):
            self.delivery_delayed.inc()
        elif isinstance(event, NoticeShown):
            self.notices.labels("shown").inc()
        elif isinstance(event, NoticeLost):
            self.notices.labels("lost").inc()

    def discord_trace(self) -> aiohttp.TraceConfig:
        """Pass as discord.py's `http_trace`: counts 429s and error answers of Discord's REST API."""
        trace = aiohttp.TraceConfig()

        async def on_request_end(
            session: aiohttp.ClientSession, context: Any, params: aiohttp.TraceRequestEndParams
        ) -> None:
            status = params.response.status
            if status == 429:
                scope = params.response.headers.get("X-RateLimit-Scope", "")
                self.discord_rate_limited.labels(scope if scope in DISCORD_RATE_LIMIT_SCOPES else "unknown").inc()
            if status >= 400:
                self.discord_errors.labels(str(status)).inc()

        trace.on_request_end.append(on_request_end)
        return trace

    async def watch_loop_lag(self, interval: float = 0.5) -> None:
        """Run forever (as a task): sleep `interval`, record how much later than asked the loop woke us."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(interval)
            self.loop_lag.observe(max(0.0, loop.time() - started - interval))


class MeteredRunComfyClient(RunComfyClient):
    """The RunComfy client, counting each call and its errors, and timing how soon a finish is seen."""

    metrics: BotMetrics | None = None
    _SEEN_LIMIT = 1024

    @classmethod
    def metered(
        cls,
        session: aiohttp.ClientSession,
        settings: Settings,
        *,
        token: SecretStr | None,
        limiter: Limiter | None,
        metrics: BotMetrics,
        image_workers: ImageWorkers | None = None,
    ) -> MeteredRunComfyClient:
        """`from_settings`, reporting to `metrics`."""
        client = cls.from_settings(session, settings, token=token, limiter=limiter, image_workers=image_workers)
        if not isinstance(client, MeteredRunComfyClient):  # from_settings builds `cls`; this tells mypy so
            raise TypeError(f"expected a MeteredRunComfyClient, got {type(client).__name__}")
        client.attach(metrics)
        return client

    def attach(self, metrics: BotMetrics) -> None:
        self.metrics = metrics
        self._seen_finished: OrderedDict[str, None] = OrderedDict()
        metrics.watch_client(self)

    async def _metered(self, operation: str, call: Awaitable[T]) -> T:
        metrics = self.metrics
        if metrics is not None:
            metrics.calls.labels(operation).inc()
        try:
            return await call
        except RunComfyError as error:
            if metrics is not None:
                metrics.errors.labels(operation, error_kind(error)).inc()
            raise

    async def submit(self, inputs: Mapping[str, Any], *, model: str | None = None) -> Submitted:
        return await self._metered("submit", super().submit(inputs, model=model))

    async def status(self, request_id: str) -> RequestStatus:
        return await self._metered("status", super().status(request_id))

    async def result(self, request_id: str, *, include_cost: bool = False) -> RequestResult:
        result = await self._metered("result", super().result(request_id, include_cost=include_cost))
        self._observe_detection(request_id, result)
        return result

    async def cancel(self, request_id: str) -> CancelResult:
        return await self._metered("cancel", super().cancel(request_id))

    async def model_info(self, model: str | None = None) -> ModelInfo:
        return await self._metered("model_info", super().model_info(model))

    async def download_image(self, url: str) -> DownloadedImage:
        return await self._metered("download", super().download_image(url))

    def _observe_detection(self, request_id: str, result: RequestResult) -> None:
        """The first time a finished result is read: now minus RunComfy's finished_at (clocks are NTP-close)."""
        if self.metrics is None or result.state not in (UpstreamState.SUCCEEDED, UpstreamState.FAILED):
            return
        finished = _parse_time(result.finished_at)
        if finished is None or request_id in self._seen_finished:
            return
        self._seen_finished[request_id] = None
        if len(self._seen_finished) > self._SEEN_LIMIT:
            self._seen_finished.popitem(last=False)
        delay = (datetime.now(UTC) - finished).total_seconds()
        self.metrics.detection_delay.observe(max(0.0, delay))
