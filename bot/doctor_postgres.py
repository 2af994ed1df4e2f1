"""The doctor's line about a PostgreSQL `DATABASE_URL`: reachable, which schema, which bot processes run.

Read-only like the SQLite check: it connects with a pool of one connection,
reads the schema version (never migrates), counts live jobs, and lists the
processes in the registry with their shards. When a live process already runs
shards these settings name, it says so: a second process started with them
would be refused (which is also what an operator sees when running `check`
next to the bot, with the bot's own settings).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from bot.settings import Settings
from storage.postgres import reports
from storage.postgres.connect import create_pool, redact_url
from storage.postgres.migrate import bundled_migrations, schema_version
from storage.postgres.registry import ProcessInfo, ProcessRegistry, conflict_sentence
from storage.sqlite_common import StoreUnavailableError

if TYPE_CHECKING:
    from bot.doctor import Report

CONNECT_TIMEOUT = 5.0
POSTGRES_FIX = "check DATABASE_URL (postgresql://user:password@host:5432/database) and that PostgreSQL runs"
NEWER_FIX = "run the release that wrote it (or a newer one), or restore a backup made by this release"
REGISTRY_VERSION = 4  # the migration that made the processes table


async def check_postgres(url: str, settings: Settings, report: Report) -> None:
    where = f"Database {redact_url(url)}"
    try:
        pool = await create_pool(url, min_size=1, max_size=1, timeout=CONNECT_TIMEOUT)
    except StoreUnavailableError as error:
        report.fail(f"{where}: cannot connect ({error.reason})", POSTGRES_FIX)
        return
    except ValueError as error:
        report.fail(str(error), POSTGRES_FIX)
        return
    try:
        async with pool.acquire() as conn:
            version = await schema_version(conn)
        known = len(bundled_migrations())
        if version > known:
            report.fail(
                f"{where}: schema version {version} was written by a newer release of the bot; "
                f"this one knows versions up to {known} and will not touch it",
                NEWER_FIX,
            )
            return
        if version < known:
            report.ok(f"{where}: reachable, schema version {version}; `python -m bot run` migrates it to {known}")
            if version < REGISTRY_VERSION:
                return
        now = datetime.now(UTC)
        registry = ProcessRegistry(pool, lease=timedelta(seconds=settings.lease_seconds))
        live = await registry.live(now=now)
        if version == known:
            unfinished = sum((await reports.count_unfinished_by_state(pool)).values())
            report.ok(f"{where}: reachable, schema version {version}, {unfinished} unfinished job(s); {_running(live)}")
        holder = await registry.in_the_way(settings.shard_count or 1, tuple(settings.owned_shards or [0]), now=now)
        if holder is not None:
            sentence = conflict_sentence(settings.shard_count or 1, tuple(settings.owned_shards or [0]), holder)
            report.note(f"A bot process started with these settings now would be refused: {sentence}")
    except StoreUnavailableError as error:
        report.fail(f"{where}: {error.reason}", POSTGRES_FIX)
    finally:
        await pool.close()


def _running(live: list[ProcessInfo]) -> str:
    if not live:
        return "no bot process is running on it"
    described = "; ".join(
        f"{process.process_id} on {process.host} (shards {','.join(map(str, process.shard_ids))}"
        f" of {process.shard_count})"
        for process in live
    )
    return f"{len(live)} bot process(es) running: {described}"
