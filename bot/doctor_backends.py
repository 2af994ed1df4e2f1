"""The doctor's checks of what the bot needs besides Discord: RunComfy and the database.

RunComfy: the model's catalog entry (and price) and a status call on a
made-up request id, which proves the token without creating anything. When
no HTTP answer comes back at all, the line says the host could not be reached
and why, in words (refused, no DNS answer, silence), and that the token was
not checked: telling an operator to replace a key that may be fine sends them
the wrong way.

The database line says what the file is, without changing it.

`python -m bot check` is what an operator runs when something is wrong,
often while the bot is running, sometimes on a backup or with the release they
are about to install. So it opens the database read-only (`mode=ro`: refused
writes, even as root), never migrates it and never takes the write lock. It
reads the schema version first: a file from a newer release is refused with
the two versions and what to do; an older one is fine, and `run` migrates it
on its next start. Whether the bot could write is read from the file system
(the file and its folder, where SQLite puts the -wal and -shm files).

Jobs with no channel are the CLI's (`python -m bot generate`): the bot never
resumes or shows them, so they are listed apart, with their request ids,
instead of being counted as the bot's unfinished work.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import aiohttp

from bot.doctor_models import check_models
from bot.runcomfy import (
    AuthError,
    BalanceError,
    ForbiddenRequestError,
    InvalidModelError,
    RequestNotFoundError,
    RunComfyClient,
    RunComfyError,
    TransientError,
)
from bot.settings import TOKEN_HELP, MissingSettingError, Settings
from storage.migrate import latest_version
from storage.models import Job
from storage.sqlite import SQLiteJobStore, StoreUnavailableError

if TYPE_CHECKING:
    from bot.doctor import Report

LOW_DISK_BYTES = 100 * 1024 * 1024
CLI_JOBS_SHOWN = 5
FOLDER_FIX = "DATABASE_PATH must point into a folder this user can write (in Docker: the /data volume)"
NEWER_FIX = "run the release that wrote it (or a newer one), or restore a backup made by this release"
RUNCOMFY_TOKEN_FIX = TOKEN_HELP["RUNCOMFY_API_TOKEN"] + ", put it in RUNCOMFY_API_TOKEN"
NETWORK_FIX = "check the machine's network connection, DNS and firewall"
REACH_TIMEOUT = 5.0
# A request id nobody has: asking its status proves the token (401) without creating anything (404).
PROBE_REQUEST_ID = "00000000-0000-4000-8000-000000000000"


def shown_url(url: str) -> str:
    """Scheme, host and port only: never a user:password@ or a query string."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


async def reach(url: str) -> str:
    """Why the host of `url` cannot be reached, in words (never an exception's class name)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = parts.port or (443 if parts.scheme in ("https", "wss") else 80)
    try:
        async with asyncio.timeout(REACH_TIMEOUT):
            _, writer = await asyncio.open_connection(host, port)
    except socket.gaierror:
        return f"the name {host} did not resolve (DNS)"
    except ConnectionRefusedError:
        return f"{host} refused the connection on port {port}"
    except TimeoutError:
        return f"{host} did not answer on port {port} within {REACH_TIMEOUT:g} s"
    except OSError as error:
        return f"{host} could not be reached on port {port} ({(error.strerror or 'network error').lower()})"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return f"{host} accepts connections on port {port}, but the request failed (a proxy, TLS or the service)"


async def check_runcomfy(settings: Settings, report: Report) -> None:
    try:
        token = settings.require("RUNCOMFY_API_TOKEN")
    except MissingSettingError as error:
        report.fail(f"RunComfy token: {error}", RUNCOMFY_TOKEN_FIX)
        return
    where = shown_url(settings.runcomfy_base_url)
    model = settings.runcomfy_model
    quick = settings.model_copy(update={"runcomfy_max_retries": 1, "runcomfy_http_timeout_seconds": 10.0})
    async with aiohttp.ClientSession() as session:
        client = RunComfyClient.from_settings(session, quick, token=token)
        try:
            info = await client.model_info()
            with contextlib.suppress(RequestNotFoundError, ForbiddenRequestError):
                await client.status(PROBE_REQUEST_ID)  # 404 with a good token; 401 with a bad one
        except AuthError:
            report.fail("RunComfy token: RunComfy rejected RUNCOMFY_API_TOKEN", RUNCOMFY_TOKEN_FIX)
            return
        except InvalidModelError:
            report.fail(f"RunComfy model: {where} does not know {model}", "check RUNCOMFY_MODEL (copy the model id)")
            return
        except BalanceError:
            report.fail("RunComfy: the account is out of credit", "top it up in your RunComfy profile")
            return
        except TransientError as error:
            if error.status is None:  # no HTTP answer at all: the network, not the token
                report.fail(
                    f"RunComfy: could not reach {where}: {await reach(settings.runcomfy_base_url)}; "
                    "the token was not checked",
                    f"{NETWORK_FIX}, and RUNCOMFY_BASE_URL",
                )
            else:
                report.fail(
                    f"RunComfy: {where} answered HTTP {error.status}; the token was not checked",
                    "try again in a few minutes; if it persists, check RUNCOMFY_BASE_URL and RunComfy's status",
                )
            return
        except RunComfyError as error:
            report.fail(f"RunComfy: no usable answer from {where} ({error.message})", "check RUNCOMFY_BASE_URL")
            return
        price = f"${info.base_price_usd:g} per image" if info.base_price_usd is not None else "price not published"
        name = f" ({info.name})" if info.name else ""
        report.ok(f"RunComfy token: accepted by {where}; model {model}{name}, {price}")
        await check_models(client, settings, report)


async def check_database(path: Path, report: Report) -> None:
    """One ✓ or ✗ line about the database file (plus a note for jobs the CLI left), read-only."""
    if not await asyncio.to_thread(path.exists):
        _missing(path, report)
        return
    try:
        version = await asyncio.to_thread(_read_version, path)
    except sqlite3.Error as error:
        report.fail(f"Database {path}: cannot open it ({error})", FOLDER_FIX)
        return
    known = latest_version()
    if version > known:
        report.fail(
            f"Database {path}: schema version {version} was written by a newer release of the bot; "
            f"this one knows versions up to {known} and will not touch it",
            NEWER_FIX,
        )
        return
    where = f"Database {path}"
    if not _writable(path):
        report.fail(f"{where}: the bot could not write it (the file or its folder is read-only)", FOLDER_FIX)
        return
    free = shutil.disk_usage(path.parent).free
    room = f"{free / 1e9:.1f} GB free"
    if version < known:
        line = (
            f"{where}: writable, schema version {version}; `python -m bot run` migrates it to {known} "
            f"on its next start (back it up first); {room}"
        )
        _disk_line(report, line, free)
        return
    try:
        store = await SQLiteJobStore.open(path, read_only=True)
    except StoreUnavailableError as error:
        report.fail(f"{where}: cannot read it ({error.reason})", FOLDER_FIX)
        return
    try:
        counts = await store.count_unfinished_by_state()
        left_by_cli = [job for job in await store.unfinished() if job.origin.channel_id is None]
    finally:
        await store.close()
    unfinished = sum(counts.values()) - len(left_by_cli)
    _disk_line(report, f"{where}: writable, schema version {version}, {unfinished} unfinished job(s), {room}", free)
    if left_by_cli:
        report.note(_cli_note(left_by_cli))


def _missing(path: Path, report: Report) -> None:
    folder = _nearest_existing(path.parent)
    if folder.is_dir() and os.access(folder, os.W_OK | os.X_OK):
        report.ok(f"Database {path}: not created yet; `python -m bot run` creates it (its folder is writable)")
    else:
        report.fail(f"Database {path}: cannot open it ({folder} is not a folder this user can write)", FOLDER_FIX)


def _nearest_existing(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _read_version(path: Path) -> int:
    """`PRAGMA user_version` through a read-only connection: reading the header takes no write lock."""
    uri = f"{path.resolve().as_uri()}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5.0)) as connection:
        return int(connection.execute("PRAGMA user_version").fetchone()[0])


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)


def _disk_line(report: Report, line: str, free: int) -> None:
    if free < LOW_DISK_BYTES:
        report.fail(line, "free some disk space: SQLite needs room to write")
    else:
        report.ok(line)


def _cli_note(jobs: list[Job]) -> str:
    shown = ", ".join(f"{job.request_id or '(never sent)'} {job.state.value}" for job in jobs[:CLI_JOBS_SHOWN])
    more = f" and {len(jobs) - CLI_JOBS_SHOWN} more" if len(jobs) > CLI_JOBS_SHOWN else ""
    return (
        f"{len(jobs)} job(s) left by the CLI (`python -m bot generate` stopped before they ended; "
        f"the bot does not resume them): {shown}{more}"
    )
