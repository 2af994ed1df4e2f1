"""Client for RunComfy's Model API (async queue endpoints) and its result files.

Protocol facts and open points: docs/runcomfy-api.md. The rules this client
keeps, and why:

* Every HTTP attempt (retries and downloads included) first awaits the shared
  limiter, so the whole bot stays inside one request budget.
* GETs and cancel (idempotent) retry 408/429/5xx, timeouts, resets and garbage
  bodies with capped exponential backoff and full jitter, preferring the
  server's Retry-After.
* Submit is never retried: no idempotency key exists, so a lost answer may hide
  a billed job. It raises SubmitOutcomeUnknownError instead.
* The token goes only to `base_url`, as a per-request header (never a session
  default), and never into an error, a repr or a log line.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, urlsplit

import aiohttp
from aiolimiter import AsyncLimiter
from pydantic import SecretStr, ValidationError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_base

from bot.download import DEFAULT_MAX_PIXELS, DownloadedImage, HostPolicy, fetch_image
from bot.images import ImageWorkers
from bot.runcomfy_errors import (
    AuthError,
    BalanceError,
    DownloadError,
    ForbiddenRequestError,
    InvalidInputError,
    InvalidModelError,
    ModerationError,
    RequestNotFoundError,
    RunComfyError,
    SubmitOutcomeUnknownError,
    TransientError,
    UpstreamJobFailedError,
    error_from_answer,
    parse_retry_after,
)
from bot.runcomfy_models import (
    CancelResult,
    ModelInfo,
    RequestResult,
    RequestStatus,
    Submitted,
    UpstreamState,
    extract_image_urls,
    failure_from_result,
    normalize_state,
)

if TYPE_CHECKING:
    from bot.settings import Settings

__all__ = [
    "AuthError",
    "BalanceError",
    "CancelResult",
    "DownloadError",
    "DownloadedImage",
    "ForbiddenRequestError",
    "InvalidInputError",
    "InvalidModelError",
    "ModelInfo",
    "ModerationError",
    "RequestNotFoundError",
    "RequestResult",
    "RequestStatus",
    "RunComfyClient",
    "RunComfyError",
    "SubmitOutcomeUnknownError",
    "Submitted",
    "TransientError",
    "UpstreamJobFailedError",
    "UpstreamState",
    "extract_image_urls",
    "failure_from_result",
    "normalize_state",
]

log = logging.getLogger(__name__)

_REDACTED = "***"


class _NotSentError(TransientError):
    """The connection was never made, so the request cannot have reached RunComfy."""


class _PreferRetryAfter(wait_base):
    """Full-jitter exponential backoff, unless the error says how long to wait (Retry-After)."""

    def __init__(self, base: float, cap: float, retry_after_cap: float) -> None:
        self.base = base
        self.cap = cap
        self.retry_after_cap = retry_after_cap

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, int | float):
            return min(float(retry_after), self.retry_after_cap)
        ceiling = min(self.cap, self.base * 2 ** (retry_state.attempt_number - 1))
        return random.uniform(0.0, ceiling)  # noqa: S311 (jitter, not crypto)


class Limiter(Protocol):
    """The request budget every RunComfy call waits on: an `aiolimiter.AsyncLimiter` in one process, or
    `storage.postgres.budget.SharedRequestBudget` when several processes share one budget."""

    async def acquire(self, amount: float = 1) -> None: ...


class RunComfyClient:
    """One model on one RunComfy endpoint; cheap to build, shares the app's session and limiter."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        model: str,
        token: SecretStr | None,
        limiter: Limiter | None = None,
        timeout: float = 30.0,
        max_retries: int = 4,
        allowed_hosts: Sequence[str] = ("*.runcomfy.net",),
        max_download_bytes: int = 40 * 1024 * 1024,
        backoff_base: float = 0.5,
        backoff_cap: float = 20.0,
        download_timeout: float = 60.0,
        max_image_pixels: int = DEFAULT_MAX_PIXELS,
        image_workers: ImageWorkers | None = None,
    ) -> None:
        self._session = session
        self.base_url = base_url.rstrip("/")
        self.model = model.strip("/")
        self._token = token
        self._limiter = limiter
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self.max_retries = max_retries
        # The API host is the operator's choice: its DNS answers may be local (an emulator, a proxy).
        self._host_policy = HostPolicy(allowed_hosts, trusted_hosts=[urlsplit(self.base_url).hostname or ""])
        self.max_download_bytes = max_download_bytes
        self.download_timeout = download_timeout
        self.max_image_pixels = max_image_pixels
        self.image_workers = image_workers
        self._wait = _PreferRetryAfter(backoff_base, backoff_cap, retry_after_cap=backoff_cap * 3)
        self.request_count = 0

    @classmethod
    def from_settings(
        cls,
        session: aiohttp.ClientSession,
        settings: Settings,
        *,
        token: SecretStr | None,
        limiter: Limiter | None = None,
        image_workers: ImageWorkers | None = None,
    ) -> RunComfyClient:
        """Build from Settings; the token is explicit because `--emulator` swaps in the emulator's.

        Pass the application's one limiter; without it a private one is made
        from `runcomfy_requests_per_second`, which budgets this client alone.
        Pass the process's one `ImageWorkers` too, so downloads and delivery
        share the IMAGE_WORKERS bound; without it each download check gets a
        thread of its own.
        """
        return cls(
            session,
            base_url=settings.runcomfy_base_url,
            model=settings.runcomfy_model,
            token=token,
            limiter=limiter or AsyncLimiter(settings.runcomfy_requests_per_second, 1.0),
            timeout=settings.runcomfy_http_timeout_seconds,
            max_retries=settings.runcomfy_max_retries,
            allowed_hosts=settings.allowed_download_hosts,
            max_download_bytes=settings.download_max_bytes,
            max_image_pixels=settings.image_max_pixels,
            image_workers=image_workers,
        )

    def __repr__(self) -> str:
        return f"RunComfyClient(base_url={self.base_url!r}, model={self.model!r})"

    # -- the five API calls -------------------------------------------------

    async def submit(self, inputs: Mapping[str, Any], *, model: str | None = None) -> Submitted:
        """Start a job of `model` (default: the client's). Never retried: see SubmitOutcomeUnknownError for what a
        lost answer means."""
        url = f"{self.base_url}/v1/models/{(model or self.model).strip('/')}"
        try:
            body = await self._attempt("POST", url, operation="submit", json_body=dict(inputs))
        except _NotSentError:
            raise  # never left this machine: nothing was created, the caller may try again
        except TransientError as exc:
            if exc.status in (408, 429):
                raise  # the server answered and refused: nothing was created
            raise SubmitOutcomeUnknownError(
                f"submit: answer lost ({exc.message}); a job may exist upstream", status=exc.status
            ) from None
        try:
            submitted = Submitted.model_validate(body)
        except ValidationError:
            raise SubmitOutcomeUnknownError("submit: answer has no request_id; a job may exist upstream") from None
        log.info("submitted RunComfy request %s", submitted.request_id, extra={"request_id": submitted.request_id})
        return submitted

    async def status(self, request_id: str) -> RequestStatus:
        """Poll a job's state (cheap; `completed` still needs `result()` to learn the outcome)."""
        body = await self._with_retries("GET", self._request_url(request_id, "status"), operation="status")
        return RequestStatus.model_validate(body)

    async def result(self, request_id: str, *, include_cost: bool = False) -> RequestResult:
        """Fetch a job's result; while unfinished it carries the current state.

        A failed job is returned, not raised, so the caller sees its state: use
        `RequestResult.failure()` or `raise_for_failure()`.
        """
        url = self._request_url(request_id, "result") + ("?include_cost=true" if include_cost else "")
        body = await self._with_retries("GET", url, operation="result")
        return RequestResult.model_validate(body)

    async def cancel(self, request_id: str) -> CancelResult:
        """Ask to cancel; only queued jobs can be. A POST, but idempotent, so it retries like a GET."""
        body = await self._with_retries("POST", self._request_url(request_id, "cancel"), operation="cancel")
        return CancelResult.model_validate(body)

    async def model_info(self, model: str | None = None) -> ModelInfo:
        """A model's catalog entry (input schema, base price); default: the client's model."""
        url = f"{self.base_url}/v1/models/{(model or self.model).strip('/')}"
        body = await self._with_retries("GET", url, operation="model_info")
        return ModelInfo.model_validate(body)

    async def download_image(self, url: str) -> DownloadedImage:
        """Fetch and verify a result image (see bot.download); transient failures are retried."""
        retrying = self._retrying("download")
        result: DownloadedImage = await retrying(
            fetch_image,
            self._session,
            url,
            policy=self._host_policy,
            max_bytes=self.max_download_bytes,
            total_seconds=self.download_timeout,
            max_pixels=self.max_image_pixels,
            before_attempt=self._before_attempt,
            workers=self.image_workers,
        )
        return result

    # -- plumbing -------------------------------------------------------------

    def _request_url(self, request_id: str, action: str) -> str:
        # Quoted so an odd id can never walk to another path.
        if not request_id:
            raise ValueError("request_id must not be empty")
        return f"{self.base_url}/v1/requests/{quote(request_id, safe='')}/{action}"

    async def _before_attempt(self) -> None:
        if self._limiter is not None:
            await self._limiter.acquire()
        self.request_count += 1

    def _retrying(self, operation: str) -> AsyncRetrying:
        def log_retry(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            wait = state.next_action.sleep if state.next_action is not None else 0.0
            log.warning(
                "RunComfy %s failed (%s); retry %d of %d in %.2fs",
                operation,
                exc,
                state.attempt_number,
                self.max_retries,
                wait,
            )

        return AsyncRetrying(
            retry=retry_if_exception(lambda exc: isinstance(exc, RunComfyError) and exc.retryable),
            stop=stop_after_attempt(self.max_retries + 1),
            wait=self._wait,
            before_sleep=log_retry,
            reraise=True,
        )

    async def _with_retries(self, method: str, url: str, *, operation: str) -> dict[str, Any]:
        retrying = self._retrying(operation)
        result: dict[str, Any] = await retrying(self._attempt, method, url, operation=operation)
        return result

    async def _attempt(
        self, method: str, url: str, *, operation: str, json_body: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """One HTTP exchange: a JSON object on success, else a typed error (TransientError if it may pass)."""
        await self._before_attempt()
        headers = {"Accept": "application/json"}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"
        try:
            async with self._session.request(
                method, url, json=json_body, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as resp:
                status = resp.status
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                raw = await resp.read()
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            # Never connected, so nothing reached the server: safe to retry, even a submit.
            raise _NotSentError(f"{operation}: cannot connect ({type(exc).__name__})") from None
        except TimeoutError:
            raise TransientError(f"{operation}: timed out") from None
        except aiohttp.InvalidURL:
            raise RunComfyError(f"{operation}: invalid base URL") from None
        except aiohttp.ClientError as exc:
            raise TransientError(f"{operation}: connection failed ({type(exc).__name__})") from None
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        error = error_from_answer(status, body, operation=operation, retry_after=retry_after)
        if error is not None:
            raise self._redact(error)
        if not isinstance(body, dict):
            raise TransientError(f"{operation}: HTTP {status} with a body that is not a JSON object", status=status)
        return body

    def _redact(self, error: RunComfyError) -> RunComfyError:
        """Strip the token from a message built from a server body, in case the server echoed it."""
        if self._token is not None:
            secret = self._token.get_secret_value()
            if secret and secret in error.message:
                error.message = error.message.replace(secret, _REDACTED)
                error.args = (error.message,)
        return error
