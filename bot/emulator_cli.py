"""`python -m bot emulator`: the emulator's flags, and serving it from a terminal.

Every flag has a help text that ends with its default, because `--help` is
where an operator learns what the switches do. A port that is out of range or
already taken ends with one line and exit status 2 (the caller, `bot.__main__`,
prints `EmulatorStartError` like any other usage error), never a traceback. The
first lines on stdout are the two `.env` lines that point the bot at it.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import sys
from typing import Any, TextIO

from bot.emulator import Emulator
from bot.emulator_config import Duration, EmulatorConfig
from bot.settings import DEFAULT_MODEL

DEFAULT_PORT = 8188
PORT_MAX = 65535


class EmulatorStartError(Exception):
    """The emulator cannot listen where it was asked to (port taken, address not on this machine)."""


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= PORT_MAX:
        raise argparse.ArgumentTypeError(f"{value} is not a port: use 1-{PORT_MAX}, or 0 for any free port")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a rate is between 0 and 1, not {text}")
    return value


def _optional(text: str) -> str | None:
    return None if text.lower() in ("", "none", "no") else text


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the emulator's flags to `parser`, grouped, each with a help text that states its default."""
    d = EmulatorConfig()
    parser.description = "A local stand-in for RunComfy's Model API: same protocol, real PNGs, no cost."
    parser.epilog = "DIST is constant:S, uniform:LOW,HIGH or lognormal:MEDIAN,SIGMA[,CAP] (seconds)."

    def adder(title: str) -> Any:
        group = parser.add_argument_group(title)

        def add(*names: str, help: str, default_text: str | None = None, **options: Any) -> None:
            shown = "%(default)s" if default_text is None else default_text
            if options.get("type") is _rate:
                options.setdefault("metavar", "SHARE")
            elif options.get("type") in (int, float):
                options.setdefault("metavar", "N")
            elif options.get("action") == "store_true":
                shown = "off"
            group.add_argument(*names, help=f"{help} (default: {shown})", **options)

        return add

    add = adder("server")
    add("--host", default="127.0.0.1", metavar="ADDRESS", help="address to listen on")
    add("--port", type=_port, default=DEFAULT_PORT, metavar="N", help="port to listen on; 0 picks a free one")
    add("--token", default="emulator-token", help="the bearer token clients must send (RUNCOMFY_API_TOKEN)")
    add("--seed", type=int, default=0, help="seed of the random draws (timings, failures, faults)")
    add("--model-id", default=d.model_id, metavar="ID", help="the one model id it serves (RUNCOMFY_MODEL)")
    add("--max-prompt-chars", type=int, default=d.max_prompt_chars, help="longest prompt accepted")

    add = adder("timing")
    add("--queue-time", type=Duration.parse, default=d.queue_time, metavar="DIST", help="wait before a job runs")
    add("--run-time", type=Duration.parse, default=d.run_time, metavar="DIST", help="how long a job runs")
    add(
        "--queue-position-start",
        type=int,
        default=None,
        help="queue position a new job reports",
        default_text="queue wait ÷ seconds per position",
    )
    add(
        "--seconds-per-queue-position",
        type=float,
        default=d.seconds_per_queue_position,
        metavar="S",
        help="how fast reported queue positions count down",
    )

    add = adder("job outcomes")
    add("--failure-rate", type=_rate, default=d.failure_rate, help="share of jobs that fail upstream")
    add("--failure-message", default=d.failure_message, metavar="TEXT", help="the error message of a failed job")
    add("--output-shape", choices=("images", "image", "nested"), default=d.output_shape, help="shape of `output`")
    add(
        "--unknown-state",
        type=_optional,
        default=None,
        metavar="STATE",
        help="state string shown instead of in_queue/in_progress",
        default_text="none",
    )
    add(
        "--expire-after",
        type=float,
        default=None,
        metavar="S",
        help="seconds after finishing until request ids answer 404",
        default_text="never",
    )

    add = adder("faults on API calls (shares of calls, 0 to 1)")
    add("--rate-429", type=_rate, default=d.rate_429, help="answered 429")
    add(
        "--retry-after",
        type=_optional,
        default=d.retry_after,
        metavar="S",
        help="Retry-After of those 429s ('none' to omit)",
    )
    add("--rate-429-bare", type=_rate, default=d.rate_429_bare, help="answered 429 without Retry-After")
    add("--rate-5xx", type=_rate, default=d.rate_5xx, help="answered with --status-5xx")
    add("--status-5xx", type=int, default=d.status_5xx, help="the status of those answers")
    add("--slow-rate", type=_rate, default=d.slow_rate, help="answered --slow-seconds late")
    add("--slow-seconds", type=float, default=d.slow_seconds, metavar="S", help="how late a slow answer comes")
    add("--drop-rate", type=_rate, default=d.drop_rate, help="whose connection is closed unanswered")
    add("--malformed-rate", type=_rate, default=d.malformed_rate, help="answered with a body that is not JSON")
    add("--error-code-rate", type=_rate, default=d.error_code_rate, help="answered 200 with an error_code")
    add("--error-code", type=int, default=d.error_code, help="the error_code of those answers")

    add = adder("result files")
    add(
        "--result-kind",
        choices=("png", "html", "empty", "truncated", "huge", "redirect", "bomb"),
        default=d.result_kind,
        help="what a result URL serves",
    )
    add("--redirect-url", default=None, metavar="URL", help="where --result-kind redirect points", default_text="none")
    add("--huge-bytes", type=int, default=d.huge_bytes, help="size of a --result-kind huge file")
    add("--no-content-length", action="store_true", help="stream huge files without Content-Length")
    add("--full-size", action="store_true", help="serve ~4 MP images instead of 256 px previews")

    add = adder("money")
    add("--base-price", type=float, default=d.base_price_usd, metavar="USD", help="price per image in USD")
    add("--cost-shape", choices=("cost", "cost_usd", "billing"), default=d.cost_shape, help="how results carry it")
    add("--balance", type=float, default=None, metavar="USD", help="account balance in USD", default_text="unlimited")


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """The EmulatorConfig the flags of `configure_parser` describe."""
    return EmulatorConfig(
        model_id=args.model_id,
        queue_time=args.queue_time,
        run_time=args.run_time,
        queue_position_start=args.queue_position_start,
        seconds_per_queue_position=args.seconds_per_queue_position,
        failure_rate=args.failure_rate,
        failure_message=args.failure_message,
        output_shape=args.output_shape,
        unknown_state=args.unknown_state,
        expire_after=args.expire_after,
        rate_429=args.rate_429,
        retry_after=args.retry_after,
        rate_429_bare=args.rate_429_bare,
        rate_5xx=args.rate_5xx,
        status_5xx=args.status_5xx,
        slow_rate=args.slow_rate,
        slow_seconds=args.slow_seconds,
        drop_rate=args.drop_rate,
        malformed_rate=args.malformed_rate,
        error_code_rate=args.error_code_rate,
        error_code=args.error_code,
        result_kind=args.result_kind,
        redirect_url=args.redirect_url,
        huge_bytes=args.huge_bytes,
        huge_content_length=not args.no_content_length,
        full_size=args.full_size,
        base_price_usd=args.base_price,
        cost_shape=args.cost_shape,
        balance_usd=args.balance,
        max_prompt_chars=args.max_prompt_chars,
    )


def _start_failure(host: str, port: int, error: OSError) -> str:
    """One line: why the emulator cannot listen, and the flag that fixes it."""
    # asyncio wraps the errno's text in a long sentence; the errno's own words are what the operator needs.
    reason = os.strerror(error.errno) if error.errno and error.errno > 0 else error.strerror or type(error).__name__
    if error.errno in (errno.EADDRINUSE, errno.EACCES):
        fix = "pick another port with --port N, or --port 0 for any free one"
    else:
        fix = "--host must be an address of this machine (the default 127.0.0.1 always is)"
    return f"the emulator cannot listen on {host}:{port} ({reason}): {fix}"


def env_lines(emulator: Emulator) -> list[str]:
    """The `.env` lines that point the bot at this emulator (the model too, when it is not the default)."""
    lines = [f"RUNCOMFY_BASE_URL={emulator.url}", f"RUNCOMFY_API_TOKEN={emulator.token}"]
    if emulator.config.model_id != DEFAULT_MODEL:
        lines.append(f"RUNCOMFY_MODEL={emulator.config.model_id}")
    return lines


async def serve(args: argparse.Namespace, out: TextIO | None = None) -> None:
    """Serve until cancelled (Ctrl-C), after saying where and how to point the bot at it."""
    emulator = Emulator(config_from_args(args), token=args.token, seed=args.seed)
    try:
        await emulator.start(host=args.host, port=args.port)
    except OSError as error:
        await emulator.close()
        raise EmulatorStartError(_start_failure(args.host, args.port, error)) from None
    out = out or sys.stdout
    try:
        out.write(
            f"RunComfy emulator for {emulator.config.model_id} at {emulator.url} (token: {emulator.token})\n"
            "To point the bot at it, put these lines in .env, then `make run`:\n\n"
            + "".join(f"{line}\n" for line in env_lines(emulator))
            + "\nCtrl-C stops it.\n"
        )
        out.flush()
        await asyncio.Event().wait()
    finally:
        await emulator.close()
