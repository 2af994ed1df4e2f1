"""The bot with DATABASE_URL: /imagine to the picture on PostgreSQL, its registry entry, its metrics, its stop.

Several processes at once are `tests/chaos/test_processes.py`'s; here one bot
proves the wiring: the store it opens, the shards it registers, the shared
request budget its RunComfy client waits on, and the leases it holds and gives
up on a clean stop.
"""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp
import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from bot.settings import Settings
from storage.postgres.budget import SharedRequestBudget
from storage.postgres.jobs import PostgresJobStore
from storage.postgres.registry import ProcessRegistry
from tests.e2e.conftest import BotStarter, reply_showing
from tests.fakediscord import FakeChannel, FakeDiscord, FakeMember

pytestmark = pytest.mark.postgres


async def test_imagine_on_postgres_from_command_to_picture(
    fake_discord: FakeDiscord,
    start_bot: BotStarter,
    settings: Settings,
    general: FakeChannel,
    alice: FakeMember,
    postgres_url: str,
) -> None:
    async with start_bot(database_url=SecretStr(postgres_url), health_port=0) as bot:
        assert isinstance(bot.store, PostgresJobStore)
        assert bot.membership is not None
        assert bot.jobs is not None
        assert isinstance(bot.jobs.client._limiter, SharedRequestBudget)
        [me] = await ProcessRegistry(bot.store.pool).live(now=datetime.now(UTC))
        assert (me.process_id, me.shard_ids) == (bot.membership.process_id, (0,))

        interaction = await alice.run_command("imagine", general, prompt="a harbour at dawn", seed=11)
        await reply_showing(fake_discord, interaction, "Done")
        assert bot.health is not None
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{bot.health.port}/metrics") as response,
        ):
            text = await response.text()
        values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
        assert values["imagine_jobs_taken_over"] == 0
        assert not settings.database_path.exists(), "no SQLite file next to PostgreSQL"
        owner = bot.membership.process_id

    raw = await asyncpg.connect(postgres_url)
    try:
        [job] = await raw.fetch("SELECT state, lease_owner, prompt FROM jobs")
        assert (job["state"], job["prompt"]) == ("delivered", "a harbour at dawn")
        assert job["lease_owner"] == owner  # a finished job keeps the name of the process that ran it
        assert await raw.fetchval("SELECT count(*) FROM processes") == 0, "a clean stop leaves the registry"
        assert await raw.fetchval("SELECT granted FROM request_budget WHERE name = 'runcomfy'") >= 3
    finally:
        await raw.close()
