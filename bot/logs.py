"""Log lines an operator can read, or a machine can parse, and never a secret in either.

`LOG_FORMAT=text` (the default) is discord.py's own `setup_logging` look,
coloured only for a person at a terminal: discord.py alone also colours inside
Docker, where the lines end up in `docker compose logs` files and collectors as
raw escape codes. `NO_COLOR` (https://no-color.org) turns colour off anywhere;
`LOG_FORMAT=json` writes one JSON object per line with the facts passed as
`extra=` (`job_id`, `state`, `request_id`, ...) as top-level keys, so
`jq 'select(.job_id == 42)'` follows one job through its states.

Both go through `Redactor`: the bot's tokens, interaction/webhook tokens in
URLs and `Authorization` values are replaced before a line is written, even
when a library logs them at DEBUG.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

import discord

REDACTED = "***"

# Facts our modules pass as `extra=`; the JSON formatter lifts these to top-level keys.
EXTRA_KEYS = ("job_id", "state", "request_id", "guild_id", "channel_id", "shard_id", "operation")

# Discord puts interaction and webhook tokens in URL paths: /webhooks/<app id>/<token>/...,
# /interactions/<id>/<token>/callback. discord.py logs those paths at DEBUG.
_URL_TOKEN = re.compile(r"(/(?:webhooks|interactions)/\d+/)([A-Za-z0-9_.\-]{16,})")
_AUTH_VALUE = re.compile(r"\b(Bot|Bearer)\s+[A-Za-z0-9_.\-]{16,}")
# ...and in gateway payloads (INTERACTION_CREATE carries `"token": ...`), which discord.py logs at DEBUG.
# aiosqlite logs the parameters of every statement at DEBUG (`"interaction_token": ...`).
_PAYLOAD_TOKEN = re.compile(r"""(["'](?:\w+_)?token["']\s*:\s*["'])[^"']{8,}(["'])""")


class Redactor:
    """Removes known secrets and token-shaped URL parts from text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is replaced whole.
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        text = _URL_TOKEN.sub(rf"\g<1>{REDACTED}", text)
        text = _PAYLOAD_TOKEN.sub(rf"\g<1>{REDACTED}\g<2>", text)
        return _AUTH_VALUE.sub(rf"\g<1> {REDACTED}", text)


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (and traceback) through a Redactor before any formatter sees it."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact
        self._plain = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True  # a malformed call: leave it to the handler's own error reporting
        record.msg = self.redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._plain.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the known extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in EXTRA_KEYS:
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value if isinstance(value, int | float | bool) else str(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False)


def level_number(name: str) -> int:
    """`LOG_LEVEL`'s value as a logging level; unknown names mean INFO."""
    value = logging.getLevelName(name.upper())
    return value if isinstance(value, int) else logging.INFO


def wants_colour(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """True only when `stream` is a terminal and `NO_COLOR` is unset or empty.

    Escape codes help a person reading a terminal and spoil everything else: a
    file, a pipe to `jq` or `grep`, a log collector. `NO_COLOR` is a convention
    shared by many programs (https://no-color.org), not a setting of this bot,
    so it is read here rather than through `Settings`.
    """
    env = os.environ if environ is None else environ  # noqa: TID251 (a terminal convention, see above)
    if env.get("NO_COLOR"):
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


# discord.py's own layout for streams that cannot show colour, spelled out so the choice is ours.
PLAIN_TEXT = logging.Formatter("[{asctime}] [{levelname:<8}] {name}: {message}", "%Y-%m-%d %H:%M:%S", style="{")


def setup_logging(
    *,
    level: int = logging.INFO,
    fmt: str = "text",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> logging.Handler:
    """Configure the root logger once for the process; returns the handler (tests read its stream).

    Text lines are coloured when `wants_colour(stream, environ)` says so (the
    process's environment when `environ` is None); JSON lines never are.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(level)
    elif wants_colour(handler.stream, environ):
        discord.utils.setup_logging(handler=handler, level=level, root=True)
    else:
        discord.utils.setup_logging(handler=handler, formatter=PLAIN_TEXT, level=level, root=True)
    handler.addFilter(RedactingFilter(Redactor(secrets)))
    return handler
