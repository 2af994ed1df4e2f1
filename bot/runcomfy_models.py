"""The shapes of RunComfy's answers, parsed leniently.

Everything past `request_id` is loosely specified upstream (see
docs/runcomfy-api.md, "open" points), so the models accept extra keys, coerce
odd types instead of failing, and expose normalised views (`state`,
`image_urls`, `cost_usd`) that the rest of the bot relies on.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from bot.runcomfy_errors import RunComfyError, failure_error


class UpstreamState(StrEnum):
    """RunComfy's two state vocabularies (/status and /result) folded into one.

    FINISHED is /status's `completed`: the job ended but only /result says whether it worked.
    """

    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"

    @property
    def is_final(self) -> bool:
        """Whether the job can no longer change (FINISHED still needs /result to learn the outcome)."""
        return self in (UpstreamState.FINISHED, UpstreamState.SUCCEEDED, UpstreamState.FAILED, UpstreamState.CANCELLED)


_STATES = {
    "in_queue": UpstreamState.QUEUED,
    "queued": UpstreamState.QUEUED,
    "in_progress": UpstreamState.RUNNING,
    "running": UpstreamState.RUNNING,
    "completed": UpstreamState.FINISHED,
    "succeeded": UpstreamState.SUCCEEDED,
    "success": UpstreamState.SUCCEEDED,
    "failed": UpstreamState.FAILED,
    "error": UpstreamState.FAILED,
    "cancelled": UpstreamState.CANCELLED,
    "canceled": UpstreamState.CANCELLED,
}


def normalize_state(raw: str | None) -> UpstreamState:
    """Map any state string RunComfy (or its CLI) uses to an UpstreamState; anything else is UNKNOWN."""
    if not isinstance(raw, str):
        return UpstreamState.UNKNOWN
    return _STATES.get(raw.strip().lower(), UpstreamState.UNKNOWN)


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and value.lower().startswith(("http://", "https://"))


def _walk_urls(value: Any) -> Iterator[str]:
    if _is_url(value):
        yield value.strip()
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _walk_urls(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _walk_urls(item)


def extract_image_urls(output: Mapping[str, Any] | None) -> list[str]:
    """The image URLs of a result's `output`, in order, without duplicates.

    Which key imagineart fills is open, so: `output.images[]` (strings or
    `{"url": ...}`), then `output.image`; only when neither gives a URL, every
    http(s) URL found by walking `output`. Never the whole body: results can echo
    input URLs outside `output`.
    """
    if not isinstance(output, Mapping):
        return []
    found: list[str] = []
    images = output.get("images")
    if isinstance(images, list | tuple):
        for item in images:
            url = item.get("url") if isinstance(item, Mapping) else item
            if _is_url(url):
                found.append(str(url).strip())
    if _is_url(output.get("image")):
        found.append(str(output["image"]).strip())
    if not found:
        found.extend(_walk_urls(output))
    return list(dict.fromkeys(found))


_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def _to_float(value: Any) -> float | None:
    """A finite float from a number or a string like "0.03" or "$0.03"; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        match = _NUMBER.search(value.replace(",", ""))
        if not match:
            return None
        number = float(match.group())
    else:
        return None
    return number if math.isfinite(number) else None


_COST_KEYS = ("cost_usd", "cost", "total_cost_usd", "total_cost", "price_usd", "price", "amount_usd", "amount")
_COST_CONTAINERS = ("billing", "usage", "cost", "pricing", "metrics")


def parse_cost_usd(body: Mapping[str, Any]) -> float | None:
    """The run's cost in USD from a result body, whatever shape `include_cost=true` gives it.

    RunComfy's docs name the `include_cost` query flag but not the field, so this
    accepts, in order: top-level `cost_usd`, `cost`, `total_cost(_usd)`,
    `price(_usd)`, then the same keys (and `amount`, `value`, `usd`) inside
    `billing`, `usage`, `cost`, `pricing` or `metrics` objects. A number or a
    numeric string ("0.03", "$0.03") counts; the unit is assumed to be USD.
    """
    for key in _COST_KEYS[:6]:
        number = _to_float(body.get(key))
        if number is not None:
            return number
    for container in _COST_CONTAINERS:
        inner = body.get(container)
        if isinstance(inner, Mapping):
            for key in (*_COST_KEYS, "value", "usd"):
                number = _to_float(inner.get(key))
                if number is not None:
                    return number
    return None


def _as_output_mapping(output: Any) -> dict[str, Any] | None:
    """`output` as a mapping: the docs allow a bare URI or an array where an object is usual."""
    if isinstance(output, Mapping):
        return dict(output)
    if isinstance(output, str):
        return {"image": output}
    if isinstance(output, list | tuple):
        return {"images": list(output)}
    return None


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    @field_validator("*", mode="before")
    @classmethod
    def _stringify_scalars(cls, value: Any, info: ValidationInfo) -> Any:
        """Turn numbers in string fields into strings (timestamps sometimes arrive as epoch seconds)."""
        field = cls.model_fields.get(info.field_name or "")
        if field is None or field.annotation not in (str, str | None):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        if value is None and info.field_name == "status":
            return ""
        return value


class Submitted(_Lenient):
    """The submit's answer; the URLs are informational (the client builds its own from base_url)."""

    request_id: str = Field(min_length=1)
    status_url: str | None = None
    result_url: str | None = None
    cancel_url: str | None = None


class RequestStatus(_Lenient):
    """A /status answer; `queue_position` only while queued."""

    request_id: str | None = None
    status: str = ""
    queue_position: int | None = None

    @field_validator("queue_position", mode="before")
    @classmethod
    def _lenient_position(cls, value: Any) -> int | None:
        number = _to_float(value)
        return None if number is None else int(number)

    @property
    def state(self) -> UpstreamState:
        return normalize_state(self.status)


class RequestResult(_Lenient):
    """A /result answer: the current state while unfinished, outputs or an error once final."""

    request_id: str | None = None
    status: str = ""
    output: dict[str, Any] | None = None
    error: Any = None
    created_at: str | None = None
    finished_at: str | None = None
    cost_usd: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _find_cost(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            data = dict(data)
            data["cost_usd"] = parse_cost_usd(data)
            data["output"] = _as_output_mapping(data.get("output"))
        return data

    @property
    def state(self) -> UpstreamState:
        return normalize_state(self.status)

    @property
    def image_urls(self) -> list[str]:
        return extract_image_urls(self.output)

    def failure(self) -> RunComfyError | None:
        """The error this result stands for, or None if it did not fail.

        Failed means status `failed`/`error`, or a final-looking result that
        carries an `error` and no image. A refusal by a safety filter becomes a
        ModerationError, any other failure an UpstreamJobFailedError.
        """
        state = self.state
        failed = state is UpstreamState.FAILED or (
            bool(self.error)
            and state not in (UpstreamState.QUEUED, UpstreamState.RUNNING, UpstreamState.CANCELLED)
            and not self.image_urls
        )
        if not failed:
            return None
        return failure_error(self.error, request_id=self.request_id, status=self.status)

    def raise_for_failure(self) -> None:
        """Raise `failure()` if there is one."""
        error = self.failure()
        if error is not None:
            raise error


class CancelResult(_Lenient):
    """A /cancel answer: `outcome` is `cancelled` only when the job really will not run."""

    request_id: str | None = None
    status: str = ""
    outcome: str | None = None

    @property
    def cancelled(self) -> bool:
        """Any outcome but `cancelled` means the job runs on and is billed."""
        return isinstance(self.outcome, str) and self.outcome.strip().lower() == "cancelled"

    @property
    def state(self) -> UpstreamState:
        return normalize_state(self.status)


class ModelInfo(_Lenient):
    """A catalog entry; only the id, name and price are read, the rest (schema) is kept as extras."""

    model_id: str | None = None
    name: str | None = None
    base_price_usd: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            data = dict(data)
            if data.get("model_id") is None and isinstance(data.get("id"), str):
                data["model_id"] = data["id"]
            price = data.get("base_price_usd")
            if price is None:
                price = data.get("price_usd", data.get("base_price"))
            data["base_price_usd"] = _to_float(price)
        return data


def failure_from_result(result: RequestResult) -> RunComfyError:
    """The error to report for a result the caller already knows is a failure.

    `result.failure()` when it recognises one (ModerationError or
    UpstreamJobFailedError), else a plain UpstreamJobFailedError, so a caller
    that decided "failed" from the state alone always gets an error.
    """
    return result.failure() or failure_error(result.error, request_id=result.request_id, status=result.status)
