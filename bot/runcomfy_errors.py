"""Typed errors for the RunComfy Model API, and the one place answers become errors.

Each error carries facts (HTTP status, RunComfy `error_code`, whether a retry can
help) plus `user_message`: one fixed sentence a Discord member may read. The
message never holds a token, a URL or a raw body, so a cog can show it as is.
`for_operator()` is the other audience: what went wrong, RunComfy's own words
and code, and the setting to look at, for the log and the command line.
"""

from __future__ import annotations

import email.utils
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

# RunComfy's documented error codes (docs.runcomfy.com, "Error codes").
CODE_INVALID_MODEL = 400001
CODE_NO_BALANCE = 400002
CODE_AUTH = 400004
CODE_FORBIDDEN_REQUEST = 403001
CODE_REQUEST_NOT_FOUND = 404001

# The keys RunComfy's own clients read the message from, in their order.
MESSAGE_KEYS = ("error_message", "message", "error", "detail")

_MAX_MESSAGE_CHARS = 300
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\[\]]{0,63}$")
_FIELD_IN_TEXT = (
    re.compile(r"""^\s*['"`]?([A-Za-z_][A-Za-z0-9_]{0,63})['"`]?\s*:"""),
    re.compile(r"""\b(?:field|parameter|input|property)\s+['"`]?([A-Za-z_][A-Za-z0-9_]{0,63})""", re.IGNORECASE),
)
# Best effort: words providers use when a safety filter refused the content.
_MODERATION = re.compile(
    r"nsfw|moderat|content[ _-]?(?:policy|filter|safety)|safety|unsafe|inappropriate|flagged|prohibited|"
    r"violat|refus|explicit content|not allowed",
    re.IGNORECASE,
)


class RunComfyError(Exception):
    """Base of every RunComfy failure; `str()` is for logs, `user_message` for members."""

    default_user_message: ClassVar[str] = "The image service had a problem with this request."
    default_retryable: ClassVar[bool] = False
    operator_hint: ClassVar[str] = "RunComfy could not do it"

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        status: int | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
        user_message: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.retryable = self.default_retryable if retryable is None else retryable
        # Seconds the server asked us to wait (Retry-After); used by the retry loop.
        self.retry_after = retry_after
        self.user_message = user_message or self.default_user_message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code}, status={self.status})"

    def for_operator(self) -> str:
        """One line for whoever runs the bot: what to do, then RunComfy's answer (status, code, its message)."""
        return f"{self.operator_hint} [{self.message}]"


class AuthError(RunComfyError):
    """400004 / HTTP 401, 403: the API key is missing, expired or revoked; only the operator can fix it."""

    default_user_message = "The bot's image service key was rejected; the bot operator needs to fix it."
    operator_hint = (
        "RunComfy rejected RUNCOMFY_API_TOKEN: create a key in your RunComfy profile "
        "(https://www.runcomfy.com/profile) and put it in .env"
    )


class BalanceError(RunComfyError):
    """400002 / HTTP 402: the account has no credit left."""

    default_user_message = "The bot's image service account is out of credit; the bot operator needs to top it up."
    operator_hint = "the RunComfy account has no credit left: top it up at https://www.runcomfy.com"


class InvalidModelError(RunComfyError):
    """400001: the configured model id does not exist upstream."""

    default_user_message = "The bot is configured with an image model the service does not know."
    operator_hint = "RunComfy does not know the model in RUNCOMFY_MODEL: check its spelling"


class ForbiddenRequestError(RunComfyError):
    """403001: the request id belongs to another account (e.g. the key was swapped mid-job)."""

    default_user_message = "This image request belongs to a different service account."
    operator_hint = "the request belongs to another RunComfy account: was RUNCOMFY_API_TOKEN changed meanwhile?"


class RequestNotFoundError(RunComfyError):
    """404001 / HTTP 404: the request id is unknown or expired, so the job is lost upstream."""

    default_user_message = "The image service no longer knows this request; it may have expired."
    operator_hint = "RunComfy no longer knows this request id (it expired, or RUNCOMFY_BASE_URL changed)"


class InvalidInputError(RunComfyError):
    """HTTP 400/422: the inputs do not match the model's schema; `field` names the culprit when known."""

    default_user_message = "The image service rejected the request's inputs."
    operator_hint = "RunComfy refused the inputs for RUNCOMFY_MODEL"

    def __init__(self, message: str, *, field: str | None = None, **kwargs: Any) -> None:
        if field is not None and kwargs.get("user_message") is None:
            kwargs["user_message"] = f"The image service rejected the `{field}` input."
        super().__init__(message, **kwargs)
        self.field = field


class ModerationError(RunComfyError):
    """The provider refused the content; classified from the failure text, so best effort."""

    default_user_message = "The image service refused this prompt under its content rules; try rewording it."
    operator_hint = "RunComfy's content filter refused the prompt"


class TransientError(RunComfyError):
    """408/429/5xx, timeouts, resets, garbage bodies: the same call may work a moment later."""

    default_user_message = "The image service is busy or unreachable right now; please try again shortly."
    default_retryable = True
    operator_hint = "RunComfy is busy or unreachable: check RUNCOMFY_BASE_URL and the network, then try again"


class SubmitOutcomeUnknownError(RunComfyError):
    """The submit may have reached RunComfy but its answer was lost: a billed job may exist.

    Never retried: RunComfy documents no idempotency key, so resending could pay twice.
    """

    default_user_message = (
        "The image service did not confirm the request; it may still run and be billed, so it was not resent."
    )
    operator_hint = "the answer to the submit was lost: the job may exist at RunComfy and be billed; not resent"


class UpstreamJobFailedError(RunComfyError):
    """The job ran and failed upstream (result status `failed`, or an error in the result)."""

    default_user_message = "The image service failed to generate this image."
    operator_hint = "the job failed at RunComfy"


class DownloadError(RunComfyError):
    """The finished image could not be fetched or is not a usable image."""

    default_user_message = "The finished image could not be downloaded."
    operator_hint = "the finished image could not be downloaded: check DOWNLOAD_ALLOWED_HOSTS and DOWNLOAD_MAX_BYTES"


def error_message(body: Any) -> str | None:
    """The message of an error body, read from the keys RunComfy's clients use, in their order."""
    if not isinstance(body, Mapping):
        return None
    for key in MESSAGE_KEYS:
        value = body.get(key)
        if value is None or value == "":
            continue
        if isinstance(value, Mapping):
            nested = error_message(value)
            return nested if nested is not None else _short(str(value))
        return _short(value if isinstance(value, str) else str(value))
    return None


def error_code(body: Any) -> int | None:
    """`error_code` as an int, accepting the numeric strings some gateways send."""
    if not isinstance(body, Mapping):
        return None
    raw = body.get("error_code")
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and raw.strip().isdigit():
        return int(raw.strip())
    return None


def field_from_detail(detail: Any) -> str | None:
    """The input field a validation `detail` points at, if it clearly points at one.

    Handles FastAPI's `[{"loc": ["body", "prompt"], ...}]`, `{"field": "prompt"}`
    and strings like `"prompt: too long"` or `"invalid field 'seed'"`.
    """
    if isinstance(detail, list) and detail:
        return field_from_detail(detail[0])
    if isinstance(detail, Mapping):
        for key in ("field", "param", "parameter", "name"):
            value = detail.get(key)
            if isinstance(value, str) and _FIELD_NAME.match(value):
                return value
        loc = detail.get("loc")
        if isinstance(loc, list | tuple):
            names = [str(part) for part in loc if isinstance(part, str) and part not in ("body", "query", "path")]
            if names and _FIELD_NAME.match(names[-1]):
                return names[-1]
        return None
    if isinstance(detail, str):
        for pattern in _FIELD_IN_TEXT:
            match = pattern.search(detail)
            if match:
                return match.group(1)
    return None


def looks_like_moderation(text: str | None) -> bool:
    """Whether a failure text says a safety filter refused the content."""
    return bool(text and _MODERATION.search(text))


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds or an HTTP date; None if absent or garbage."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def error_from_answer(
    status: int, body: Any, *, operation: str, retry_after: float | None = None
) -> RunComfyError | None:
    """The error an HTTP answer stands for, or None when it is a success.

    `error_code` wins over the HTTP status because RunComfy sends some errors with
    HTTP 200. A 200 carrying an unknown code next to a recognisable job `status`
    is left to the caller: the code then describes the job, not the call.
    """
    code = error_code(body)
    message = error_message(body)
    if 200 <= status < 300:
        if code is None:
            return None
        if code not in _BY_CODE and isinstance(body, Mapping) and isinstance(body.get("status"), str):
            return None
    text = f"{operation}: HTTP {status}" + (f", error_code {code}" if code is not None else "")
    if message:
        text += f": {message}"
    facts: dict[str, Any] = {"code": code, "status": status}
    if code in _BY_CODE:
        return _BY_CODE[code](text, **facts)
    if status in (401, 403):
        return AuthError(text, **facts)
    if status == 402:
        return BalanceError(text, **facts)
    if status == 404:
        return RequestNotFoundError(text, **facts)
    if status in (400, 422):
        detail = body.get("detail") if isinstance(body, Mapping) else None
        if looks_like_moderation(message):
            return ModerationError(text, **facts)
        return InvalidInputError(text, field=field_from_detail(detail), **facts)
    if status in (408, 429) or status >= 500:
        return TransientError(text, retry_after=retry_after, **facts)
    return RunComfyError(text, **facts)


def failure_error(error: Any, *, request_id: str | None, status: str) -> RunComfyError:
    """The error for a job that failed upstream, told apart from a moderation refusal by its text."""
    message = error_message(error) if isinstance(error, Mapping) else (_short(str(error)) if error else None)
    code = error_code(error)
    text = f"result of {request_id}: job {status or 'failed'}"
    text += (f", error_code {code}" if code is not None else "") + (f": {message}" if message else "")
    if looks_like_moderation(message):
        return ModerationError(text, code=code)
    return UpstreamJobFailedError(text, code=code)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[: _MAX_MESSAGE_CHARS - 1] + "…"


_BY_CODE: dict[int, type[RunComfyError]] = {
    CODE_INVALID_MODEL: InvalidModelError,
    CODE_NO_BALANCE: BalanceError,
    CODE_AUTH: AuthError,
    CODE_FORBIDDEN_REQUEST: ForbiddenRequestError,
    CODE_REQUEST_NOT_FOUND: RequestNotFoundError,
}
