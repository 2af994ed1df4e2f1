"""Reaching PostgreSQL: the pool, a URL safe to print, and "the server said no" as `StoreUnavailableError`.

A `DATABASE_URL` may carry a password (`postgresql://bot:s3cret@db/imagine`,
or `?password=`), so the URL itself is never logged or put in an error: only
`redact_url()`'s form, with the password replaced by `***`. Errors from the
driver are scrubbed of the password too, and when one had to be scrubbed its
original is not chained (`from None`), so a logged traceback cannot carry it.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import unquote

import asyncpg

from storage.sqlite_common import StoreUnavailableError

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Pool: TypeAlias = asyncpg.Pool[asyncpg.Record]
    # What `pool.acquire()` hands out, or a connection of one's own: both run the same queries.
    Connection: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]

# Class 08 connection, 53 insufficient resources (disk full, too many connections),
# 57 operator intervention (shutdown, cannot connect now, cancelled), 58 system (I/O),
# 28 authorization, 3D no such database, 25006 read-only transaction: the server or
# its environment said no, not a bug in our SQL.
_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # refused, unreachable, reset, timed out
    asyncpg.PostgresConnectionError,
    asyncpg.InsufficientResourcesError,
    asyncpg.OperatorInterventionError,
    asyncpg.PostgresSystemError,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidCatalogNameError,
    asyncpg.ReadOnlySQLTransactionError,
)
_SCHEMES = ("postgresql", "postgres")
APPLICATION_NAME = "imagine-bot"  # how an operator tells the bot's connections apart in pg_stat_activity
_PASSWORD_PARAM = re.compile(r"(?i)((?:^|&)(?:ssl)?password=)[^&]*")
# Greedy up to the last "@" before any "?": everything before it is the user part.
_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^?#]*)@")


def _split(url: str) -> tuple[str, str | None, str | None, str]:
    """`url` as (scheme and `://`, user, password, the rest), the password read up to the last `@`.

    Not `urllib.parse`: a password typed without percent-encoding may hold `/`,
    `:` or `@`, which would make a standard parser put part of it in the host
    or path, and then print it.
    """
    match = _USERINFO.match(url)
    if match is None:
        return "", None, None, url
    user, colon, password = match["userinfo"].partition(":")
    return match["scheme"], user, password if colon else None, url[match.end() :]


def redact_url(url: str) -> str:
    """`url` with any password (in the user part or a `password=` parameter) replaced by `***`."""
    scheme, user, password, rest = _split(url)
    if user is not None:
        url = f"{scheme}{user}{':***' if password is not None else ''}@{rest}"
    head, question, query = url.partition("?")
    return head + question + _PASSWORD_PARAM.sub(r"\1***", query)


def passwords(url: str) -> list[str]:
    """Every password spelling in `url` (raw and percent-decoded), longest first, to scrub from messages."""
    found = [_split(url)[2] or ""]
    found.extend(match.group(0).split("=", 1)[1] for match in _PASSWORD_PARAM.finditer(url.partition("?")[2]))
    spellings = {value for raw in found for value in (raw, unquote(raw)) if value and value != "***"}
    return sorted(spellings, key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    """`text` with any password from `url` replaced by `***`."""
    for secret in passwords(url):
        text = text.replace(secret, "***")
    return text


def check_url(url: str) -> None:
    """Refuse a URL that is not PostgreSQL's, naming only its redacted form."""
    scheme = url.partition("://")[0] if "://" in url else ""
    if scheme.lower() not in _SCHEMES:
        raise ValueError(
            f"database URL {redact_url(url)} is not a PostgreSQL URL (postgresql://user:password@host:port/database)"
        )


@contextlib.contextmanager
def unavailable_on_error(url: str) -> Iterator[None]:
    """Turn "the server cannot be used" errors into StoreUnavailableError; let SQL bugs through as they are."""
    try:
        yield
    except _UNAVAILABLE_ERRORS as exc:
        original = str(exc) or type(exc).__name__
        reason = scrub(original, url)
        error = StoreUnavailableError(redact_url(url), reason)
        if reason != original:
            raise error from None
        raise error from exc


def aware(value: datetime, name: str) -> datetime:
    """`value` if it is timezone-aware; naive datetimes are refused rather than guessed at (as in SQLite)."""
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime or None, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value!r}")
    return value


async def connect(url: str) -> asyncpg.Connection[asyncpg.Record]:
    """One connection outside the pool (for advisory locks and LISTEN), named like the pool's."""
    check_url(url)
    with unavailable_on_error(url):
        return await asyncpg.connect(url, server_settings={"application_name": APPLICATION_NAME})


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 10, **options: Any) -> Pool:
    """A connection pool on `url`, connected (so a wrong URL fails here, as StoreUnavailableError or ValueError).

    `application_name` lets an operator tell the bot's connections apart in
    `pg_stat_activity`. Every statement the stores send is one autocommitted
    statement or an explicit transaction, so any pooled connection will do.
    """
    check_url(url)
    settings = {"application_name": APPLICATION_NAME, **options.pop("server_settings", {})}
    try:
        with unavailable_on_error(url):
            return await asyncpg.create_pool(
                url, min_size=min_size, max_size=max_size, server_settings=settings, **options
            )
    except (ValueError, asyncpg.ClientConfigurationError) as exc:
        reason = scrub(str(exc), url)
        raise ValueError(f"database URL {redact_url(url)} is not usable: {reason}") from None
