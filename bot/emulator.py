"""A local stand-in for RunComfy's Model API, for tests, benchmarks and `--emulator` runs.

It speaks the documented protocol (docs/runcomfy-api.md) for every model of
the registry it is given (the vetted set by default): submit, status, result,
cancel, model info, plus `/files/{id}.png` serving real, deterministic PNGs.
Each submit is checked against its model's JSON schema (`jsonschema`, with
unknown fields refused as RunComfy refuses them, 422 naming the field), and an
edit's input image URLs are fetched, as RunComfy fetches them: a dead link
makes the job fail upstream. Jobs follow a time model on the event loop's clock
(a queue wait, then a run time, each drawn from seeded distributions) and
every misbehaviour the client must survive can be switched on, either as a
rate in the mutable `EmulatorConfig` or scripted with `inject()`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import random
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Self

from aiohttp import web

from bot.emulator_config import (
    API_ROUTES,
    ROUTES,
    Duration,
    EmulatorConfig,
    Fault,
)
from bot.emulator_images import file_response, render_png
from bot.emulator_inputs import InputCheck, body_errors, fetch_inputs
from bot.emulator_jobs import EmulatedJob, SubmitRecord
from bot.model_registry import ModelDescription, ModelRegistry, load_registry
from bot.model_registry.schema import input_schema

__all__ = [
    "Duration",
    "EmulatedJob",
    "Emulator",
    "EmulatorConfig",
    "Fault",
    "SubmitRecord",
]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Emulator:
    """The server. `async with Emulator(config) as emu:` then point a client at `emu.url` with `emu.token`."""

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        token: str = "emulator-token",  # noqa: S107 (a public stand-in token, not a secret)
        seed: int = 0,
        registry: ModelRegistry | None = None,
    ) -> None:
        self.config = config or EmulatorConfig()
        self.registry = registry or load_registry(self.config.model_id)
        self.inputs = InputCheck()  # what fetching edits' input images found
        self.token = token
        self.seed = seed
        self._timing_rng = random.Random(f"{seed}:timing")  # noqa: S311 (simulation, not secrets)
        self._outcome_rng = random.Random(f"{seed}:outcome")  # noqa: S311
        self._fault_rng = random.Random(f"{seed}:faults")  # noqa: S311
        self._id_rng = random.Random(f"{seed}:ids")  # noqa: S311
        self.jobs: dict[str, EmulatedJob] = {}
        self.submits: list[SubmitRecord] = []
        self.calls: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.dropped = 0
        self.faults_served: Counter[str] = Counter()  # misbehaviours served, by kind (see `fault_kind`)
        # The headers of the latest call per route: lets a test prove the file host never sees the token.
        self.last_headers: dict[str, dict[str, str]] = {}
        self._faults: dict[str, deque[Fault]] = {route: deque() for route in ROUTES}
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    # -- lifecycle ------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post("/v1/models/{model_id:.+}", self._submit, name="submit")
        app.router.add_get("/v1/models/{model_id:.+}", self._model, name="model")
        app.router.add_get("/v1/requests/{request_id}/status", self._status, name="status")
        app.router.add_get("/v1/requests/{request_id}/result", self._result, name="result")
        app.router.add_post("/v1/requests/{request_id}/cancel", self._cancel, name="cancel")
        app.router.add_get("/files/{name}", self._file, name="file")
        # A short shutdown: handlers parked in a "slow" fault must not hold close() for a minute.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.25)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self._url = f"http://{shown}:{bound_port}"
        log.info("RunComfy emulator listening on %s", self._url)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:41234 (only once started)."""
        if self._url is None:
            raise RuntimeError("emulator not started")
        return self._url

    # -- test and benchmark API ----------------------------------------------

    def inject(self, route: str, fault: Fault, times: int = 1) -> None:
        """Make the next `times` calls of `route` (submit, status, result, cancel, model, file) misbehave."""
        if route not in ROUTES:
            raise ValueError(f"unknown route {route!r}; one of {sorted(ROUTES)}")
        self._faults[route].extend([fault] * times)

    def expire(self, request_id: str) -> None:
        """Forget a request id now: it answers 404 with error_code 404001 from here on."""
        self.jobs[request_id].expired = True

    def submits_for(self, prompt: str, seed: int | None = None, aspect_ratio: str | None = None) -> int:
        """How many jobs were created for these inputs (None matches anything; defaults applied)."""
        count = 0
        for record in self.submits:
            body = record.body
            if body.get("prompt") != prompt:
                continue
            if seed is not None and body.get("seed", 0) != seed:
                continue
            if aspect_ratio is not None and body.get("aspect_ratio", "1:1") != aspect_ratio:
                continue
            count += 1
        return count

    @property
    def finished_at_monotonic(self) -> dict[str, float]:
        """Per request id, the event-loop time its job finished upstream (jobs finished so far)."""
        now = self._now()
        return {rid: job.finished for rid, job in self.jobs.items() if job.cancelled_at is None and job.finished <= now}

    def file_url(self, request_id: str, number: int = 1) -> str:
        """Image `number` of a job (the first keeps the plain name older tests and benches know)."""
        name = request_id if number == 1 else f"{request_id}~{number}"
        return f"{self.config.file_base_url or self.url}/files/{name}.png"

    # -- plumbing -------------------------------------------------------------

    @staticmethod
    def _now() -> float:
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return time.monotonic()

    def _next_fault(self, route: str) -> Fault | None:
        queue = self._faults.get(route)
        if queue:
            return queue.popleft()
        cfg = self.config
        if route not in cfg.fault_routes or route not in API_ROUTES:
            return None
        process = route == "submit" and self._fault_rng.random() < 0.5  # some lost answers hide a created job
        draw = self._fault_rng.random()
        for rate, fault in (
            (cfg.drop_rate, Fault.drop(process=process)),
            (cfg.rate_5xx, Fault.http(cfg.status_5xx, {"error_message": "Service unavailable"}, process=process)),
            (cfg.rate_429, Fault.http(429, {"error_message": "Too many requests"}, retry_after=cfg.retry_after)),
            (cfg.rate_429_bare, Fault.http(429, {"error_message": "Too many requests"})),
            (cfg.malformed_rate, Fault.malformed(process=process)),
            (cfg.error_code_rate, Fault.error_code(cfg.error_code)),
            (cfg.slow_rate, Fault.slow(cfg.slow_seconds)),
        ):
            if draw < rate:
                return fault
            draw -= rate
        return None

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.name or "unknown"
        self.calls[route] += 1
        self.last_headers[route] = dict(request.headers)
        fault = self._next_fault(route)
        if fault is not None:
            self.faults_served[fault_kind(fault)] += 1
        if fault is None:
            response = await handler(request)
        elif fault.kind == "slow":
            # Work first, answer late: a client that gives up meanwhile still leaves a created job behind.
            response = await handler(request)
            await asyncio.sleep(fault.delay)
        else:
            if fault.process:
                await handler(request)
            if fault.kind == "drop":
                self.dropped += 1
                if request.transport is not None:
                    request.transport.abort()
                return web.Response()
            response = self._fault_response(fault)
        self.statuses[response.status] += 1
        return response

    @staticmethod
    def _fault_response(fault: Fault) -> web.Response:
        if fault.kind == "malformed":
            raw = fault.raw if fault.raw is not None else b'{"request_id": "half-an-answ'
            return web.Response(status=fault.status, body=raw, content_type="application/json")
        body = fault.body if fault.body is not None else {"error_message": f"emulated HTTP {fault.status}"}
        return web.json_response(body, status=fault.status, headers=dict(fault.headers))

    def _authorized(self, request: web.Request) -> str | None:
        """The caller's token if valid, else None."""
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        for token in (self.token, *self.config.extra_tokens):
            if hmac.compare_digest(presented.strip().encode(), token.encode()):
                return token
        return None

    @staticmethod
    def _error(status: int, code: int | None, message: str, **extra: Any) -> web.Response:
        body: dict[str, Any] = {"error_message": message, **extra}
        if code is not None:
            body["error_code"] = code
        return web.json_response(body, status=status)

    def _unauthorized(self) -> web.Response:
        return self._error(401, 400004, "Invalid or missing API token")

    def _job_for(self, request: web.Request) -> EmulatedJob | web.Response:
        """The caller's job named in the path, or the error answer RunComfy gives (401, 404001, 403001)."""
        caller = self._authorized(request)
        if caller is None:
            return self._unauthorized()
        job = self.jobs.get(request.match_info["request_id"])
        if job is None or self._is_expired(job):
            return self._error(404, 404001, "Request not found")
        if job.owner != caller:
            return self._error(403, 403001, "Request belongs to another account")
        return job

    def _is_expired(self, job: EmulatedJob) -> bool:
        if job.expired:
            return True
        after = self.config.expire_after
        if after is None:
            return False
        end = job.cancelled_at if job.cancelled_at is not None else job.finished
        return self._now() > end + after

    def _urls(self, request_id: str) -> dict[str, str]:
        base = f"{self.url}/v1/requests/{request_id}"
        return {"status_url": f"{base}/status", "result_url": f"{base}/result", "cancel_url": f"{base}/cancel"}

    def _shown_state(self, phase: str) -> str:
        if self.config.unknown_state and phase in ("in_queue", "in_progress"):
            return self.config.unknown_state
        return phase

    def _schema(self, model: ModelDescription) -> dict[str, Any]:
        """The model's input schema, with the prompt limit this emulator is configured to enforce."""
        schema = input_schema(model)
        prompt = schema["properties"][model.inputs.prompt]
        prompt["maxLength"] = min(prompt["maxLength"], self.config.max_prompt_chars)
        return schema

    def _validate(self, model: ModelDescription, body: Any) -> web.Response | None:
        if not isinstance(body, dict):
            return self._error(400, None, "Body must be a JSON object", detail="Body must be a JSON object")
        prompt = body.get(model.inputs.prompt)
        if isinstance(prompt, str) and not prompt.strip():
            return _invalid(model.inputs.prompt, "Field required: a non-empty string", "missing")
        errors = body_errors(self._schema(model), body)
        if errors:
            field_name, message, kind = errors[0]
            return _invalid(field_name, message, kind)
        return None

    # -- routes ---------------------------------------------------------------

    async def _submit(self, request: web.Request) -> web.Response:
        caller = self._authorized(request)
        if caller is None:
            return self._unauthorized()
        cfg = self.config
        model = self.registry.get(request.match_info["model_id"].strip("/"))
        if model is None:
            return self._error(400, 400001, "Invalid model id")
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        invalid = self._validate(model, body)
        if invalid is not None:
            return invalid
        inputs = model.inputs
        urls = body.get(inputs.image.field) if inputs.image is not None else None
        input_failure = await fetch_inputs(self.inputs, [urls] if isinstance(urls, str) else urls or [])
        count = body.get(inputs.count.field, 1) if inputs.count else 1
        if cfg.balance_usd is not None:
            cost = self._price(model.id) * count
            if cfg.balance_usd < cost:
                return self._error(402, 400002, "Insufficient balance")
            cfg.balance_usd -= cost

        now = self._now()
        queue_wait = cfg.queue_time.sample(self._timing_rng)
        run_time = cfg.run_time.sample(self._timing_rng)
        fails = self._outcome_rng.random() < cfg.failure_rate or input_failure is not None
        position = cfg.queue_position_start or max(1, math.ceil(queue_wait / max(cfg.seconds_per_queue_position, 1e-9)))
        request_id = str(uuid.UUID(int=self._id_rng.getrandbits(128), version=4))
        self.jobs[request_id] = EmulatedJob(
            request_id=request_id,
            prompt=body[inputs.prompt],
            seed=body.get(inputs.seed.field, 0) if inputs.seed else 0,
            aspect_ratio=_ratio_of(model, body),
            owner=caller,
            created=now,
            created_wall=datetime.now(UTC),
            queue_wait=queue_wait,
            run_time=run_time,
            fails=fails,
            position_start=position,
            model=model.id,
            count=count,
            failure=input_failure,
        )
        self.submits.append(SubmitRecord(request_id=request_id, body=body, received_at=now))
        log.debug("emulator job %s: queue %.2fs, run %.2fs, fails=%s", request_id, queue_wait, run_time, fails)
        return web.json_response({"request_id": request_id, **self._urls(request_id)})

    async def _status(self, request: web.Request) -> web.Response:
        job = self._job_for(request)
        if isinstance(job, web.Response):
            return job
        now = self._now()
        phase = job.phase(now)
        body: dict[str, Any] = {"request_id": job.request_id, "status": self._shown_state(phase)}
        if phase == "in_queue":
            body["queue_position"] = job.queue_position(now)
        body.update({key: value for key, value in self._urls(job.request_id).items() if key != "cancel_url"})
        return web.json_response(body)

    async def _result(self, request: web.Request) -> web.Response:
        job = self._job_for(request)
        if isinstance(job, web.Response):
            return job
        now = self._now()
        phase = job.phase(now)
        body: dict[str, Any] = {"request_id": job.request_id, "created_at": job.wall(job.created)}
        if phase in ("in_queue", "in_progress"):
            body["status"] = self._shown_state(phase)
            if phase == "in_queue":
                body["queue_position"] = job.queue_position(now)
        elif phase == "cancelled":
            body["status"] = "cancelled"
        elif job.fails:
            body.update(
                status="failed",
                finished_at=job.wall(job.finished),
                error={"error_code": 500001, "error_message": job.failure or self.config.failure_message},
            )
        else:
            body.update(status="succeeded", output=self._output(job), finished_at=job.wall(job.finished))
            if request.query.get("include_cost", "").lower() in ("1", "true", "yes"):
                body.update(self._cost(job))
        return web.json_response(body)

    async def _cancel(self, request: web.Request) -> web.Response:
        job = self._job_for(request)
        if isinstance(job, web.Response):
            return job
        now = self._now()
        if job.phase(now) == "in_queue":
            job.cancelled_at = now
            outcome = "cancelled"
        else:
            outcome = "not_cancellable"
        body = {"request_id": job.request_id, "status": self._shown_state(job.phase(now)), "outcome": outcome}
        return web.json_response(body, status=202)

    async def _model(self, request: web.Request) -> web.Response:
        if self._authorized(request) is None:
            return self._unauthorized()
        model = self.registry.get(request.match_info["model_id"].strip("/"))
        if model is None:
            return self._error(400, 400001, "Invalid model id")
        return web.json_response(
            {
                "model_id": model.id,
                "name": model.name,
                "base_price_usd": self._price(model.id),
                "input_schema": self._schema(model),
                "output_schema": {"type": "object", "properties": {"images": {"type": "array"}}},
            }
        )

    async def _file(self, request: web.Request) -> web.StreamResponse:
        request_id, _, raw_number = request.match_info["name"].removesuffix(".png").partition("~")
        job = self.jobs.get(request_id)
        number = int(raw_number) if raw_number.isdigit() else 1
        if job is None or self._is_expired(job) or job.fails or job.phase(self._now()) != "completed":
            return web.Response(status=404, text="not found")
        if not 1 <= number <= job.count:
            return web.Response(status=404, text="not found")
        cfg = self.config
        seed = job.seed + number - 1  # each image of a set differs
        return await file_response(
            request,
            cfg,
            lambda: asyncio.to_thread(render_png, job.prompt, seed, job.aspect_ratio, full_size=cfg.full_size),
        )

    def _output(self, job: EmulatedJob) -> dict[str, Any]:
        urls = [self.file_url(job.request_id, number) for number in range(1, job.count + 1)]
        shape = self.config.output_shape
        if shape == "image" and len(urls) == 1:
            return {"image": urls[0]}
        if shape == "nested":
            return {"result": {"files": [{"url": url, "content_type": "image/png"} for url in urls]}}
        return {"images": urls}

    def _price(self, model_id: str) -> float:
        """A model's price per image: the configured one for the default model, the description's for others."""
        model = self.registry.get(model_id)
        if model is None or model_id == self.config.model_id:
            return self.config.base_price_usd
        return model.price_usd

    def _cost(self, job: EmulatedJob) -> dict[str, Any]:
        """What the request cost: its model's price times the images it made."""
        price = round(self._price(job.model or self.config.model_id) * job.count, 6)
        shape = self.config.cost_shape
        if shape == "cost_usd":
            return {"cost_usd": price}
        if shape == "billing":
            return {"billing": {"cost": price, "currency": "USD"}}
        return {"cost": price}


def fault_kind(fault: Fault) -> str:
    """A short name for what a fault does to the client: "5xx", "429 + Retry-After", "timeout", ..."""
    if fault.kind == "drop":
        return "dropped connection"
    if fault.kind == "slow":
        return "slow answer"
    if fault.kind == "malformed":
        return "malformed JSON"
    if fault.status == 429:
        return "429 + Retry-After" if "Retry-After" in fault.headers else "429 without Retry-After"
    if 200 <= fault.status < 300:
        return "200 with error_code"
    return "5xx" if fault.status >= 500 else f"HTTP {fault.status}"


def _invalid(field_name: str, message: str, kind: str = "value_error") -> web.Response:
    """A 422 in FastAPI's shape: `detail` is a list whose `loc` names the field."""
    detail = [{"loc": ["body", field_name], "msg": message, "type": kind}]
    return web.json_response({"detail": detail, "error_message": f"{field_name}: {message}"}, status=422)


def _ratio_of(model: ModelDescription, body: dict[str, Any]) -> str:
    """The aspect ratio a body asks for, in the bot's names (a `size` value maps back to its ratio)."""
    shape = model.inputs.aspect_ratio
    if shape is None:
        return "1:1"
    sent = body.get(shape.field, shape.values[shape.default])
    return next((ratio for ratio, value in shape.values.items() if value == sent), shape.default)
