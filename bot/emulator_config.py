"""The emulator's switches: one mutable config object, also exposed as CLI flags.

Tests change `EmulatorConfig` fields while the server runs (every request reads
them afresh); `python -m bot emulator` builds the same object from flags
(bot/emulator_cli.py).
`Fault` describes one scripted misbehaviour for `Emulator.inject`.
"""

from __future__ import annotations

import argparse
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from bot.model_spec import PROMPT_MAX
from bot.settings import DEFAULT_MODEL

DurationKind = Literal["constant", "uniform", "lognormal"]
OutputShape = Literal["images", "image", "nested"]
ResultKind = Literal["png", "html", "empty", "truncated", "huge", "redirect", "bomb"]
CostShape = Literal["cost", "cost_usd", "billing"]
FaultKind = Literal["http", "drop", "slow", "malformed"]

# Routes faults can target; "file" is the image download, which has no auth.
API_ROUTES = frozenset({"submit", "status", "result", "cancel", "model"})
ROUTES = API_ROUTES | {"file"}


@dataclass(frozen=True)
class Duration:
    """A distribution of seconds: constant, uniform(low, high) or lognormal(median, sigma) capped at `cap`."""

    kind: DurationKind = "constant"
    a: float = 0.0  # constant value, uniform low, lognormal median
    b: float = 0.0  # uniform high, lognormal sigma
    cap: float = math.inf

    @classmethod
    def constant(cls, seconds: float) -> Duration:
        return cls("constant", seconds)

    @classmethod
    def uniform(cls, low: float, high: float) -> Duration:
        return cls("uniform", low, high)

    @classmethod
    def lognormal(cls, median: float, sigma: float, cap: float = math.inf) -> Duration:
        return cls("lognormal", median, sigma, cap)

    def sample(self, rng: random.Random) -> float:
        if self.kind == "constant":
            value = self.a
        elif self.kind == "uniform":
            value = rng.uniform(self.a, self.b)
        else:
            value = rng.lognormvariate(math.log(self.a), self.b) if self.a > 0 else 0.0
        return max(0.0, min(value, self.cap))

    def __str__(self) -> str:
        """The `parse` syntax, so `--help` shows a default the way it is typed."""
        numbers = [self.a] if self.kind == "constant" else [self.a, self.b]
        if self.kind == "lognormal" and math.isfinite(self.cap):
            numbers.append(self.cap)
        return f"{self.kind}:{','.join(f'{n:g}' for n in numbers)}"

    @classmethod
    def parse(cls, text: str) -> Duration:
        """`2`, `constant:2`, `uniform:1,5` or `lognormal:8,0.4[,60]` (median, sigma, cap)."""
        kind, _, rest = text.partition(":")
        if not rest:
            kind, rest = "constant", kind
        try:
            numbers = [float(part) for part in rest.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a duration: {text!r}") from None
        if kind == "constant" and len(numbers) == 1:
            return cls.constant(numbers[0])
        if kind == "uniform" and len(numbers) == 2:
            return cls.uniform(*numbers)
        if kind == "lognormal" and len(numbers) in (2, 3):
            return cls.lognormal(*numbers)
        raise argparse.ArgumentTypeError(
            f"not a duration: {text!r} (constant:S, uniform:LO,HI, lognormal:MED,SIGMA[,CAP])"
        )


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour of a route.

    `process=True` lets the route do its work first (a submit creates and
    counts its job) and then spoils the answer: that is a lost answer, not a
    refusal. `slow` always processes, then answers `delay` seconds late.
    """

    kind: FaultKind
    status: int = 503
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    process: bool = False
    raw: bytes | None = None

    @classmethod
    def http(
        cls,
        status: int,
        body: Any = None,
        *,
        retry_after: str | float | None = None,
        headers: Mapping[str, str] | None = None,
        process: bool = False,
    ) -> Fault:
        """Answer `status` with a JSON `body` (default: a RunComfy-style error body)."""
        merged = dict(headers or {})
        if retry_after is not None:
            merged["Retry-After"] = str(retry_after)
        return cls("http", status=status, body=body, headers=merged, process=process)

    @classmethod
    def error_code(cls, code: int, *, status: int = 200, message: str = "emulated error") -> Fault:
        """A body with `error_code`, by default under HTTP 200 as RunComfy sometimes sends."""
        return cls.http(status, {"error_code": code, "error_message": message})

    @classmethod
    def drop(cls, *, process: bool = False) -> Fault:
        """Close the connection without answering."""
        return cls("drop", process=process)

    @classmethod
    def slow(cls, seconds: float) -> Fault:
        """Do the work, then answer `seconds` late."""
        return cls("slow", delay=seconds, process=True)

    @classmethod
    def malformed(cls, *, status: int = 200, process: bool = False, raw: bytes | None = None) -> Fault:
        """A body that is not JSON (by default a truncated object) under a JSON content type."""
        return cls("malformed", status=status, process=process, raw=raw)


@dataclass
class EmulatorConfig:
    """Every knob of the emulator; mutate it while the server runs to change behaviour at once.

    Rates are probabilities per API call (on `fault_routes`), drawn from the
    emulator's seeded RNG so a run with the same seed and call order repeats.
    """

    model_id: str = DEFAULT_MODEL
    # Time model (seconds, event-loop clock).
    queue_time: Duration = field(default_factory=lambda: Duration.lognormal(1.0, 0.5, 10.0))
    run_time: Duration = field(default_factory=lambda: Duration.lognormal(4.0, 0.3, 20.0))
    queue_position_start: int | None = None  # None: derived from the wait
    seconds_per_queue_position: float = 1.0
    # Job outcomes.
    failure_rate: float = 0.0
    failure_message: str = "Generation failed: worker error"
    output_shape: OutputShape = "images"
    unknown_state: str | None = None  # replaces in_queue/in_progress in answers when set
    expire_after: float | None = None  # seconds after finishing until the id answers 404001
    # Random faults on API calls.
    fault_routes: frozenset[str] = API_ROUTES
    rate_429: float = 0.0
    retry_after: str | None = "1"  # Retry-After sent with random 429s; None: no header
    rate_429_bare: float = 0.0  # further 429s that never carry Retry-After (the client picks its own wait)
    rate_5xx: float = 0.0
    status_5xx: int = 503
    slow_rate: float = 0.0
    slow_seconds: float = 2.0
    drop_rate: float = 0.0
    malformed_rate: float = 0.0
    error_code_rate: float = 0.0  # HTTP 200 bodies carrying error_code
    error_code: int = 400004
    # Result files.
    result_kind: ResultKind = "png"
    redirect_url: str | None = None
    file_base_url: str | None = None  # where result URLs point, e.g. this server under another host name
    huge_bytes: int = 64 * 1024 * 1024
    huge_content_length: bool = True
    full_size: bool = False
    # Money and accounts.
    base_price_usd: float = 0.03
    cost_shape: CostShape = "cost"
    balance_usd: float | None = None  # None: unlimited; else each submit spends base_price_usd
    extra_tokens: tuple[str, ...] = ()  # other valid accounts (their jobs answer 403001 to us)
    max_prompt_chars: int = PROMPT_MAX
