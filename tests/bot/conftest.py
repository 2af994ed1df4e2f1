"""Shared fixtures: a running emulator, an HTTP session, and fast clients pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from bot.emulator import Duration, Emulator, EmulatorConfig
from bot.jobs import JobManager
from bot.polling import FixedPolicy
from bot.runcomfy import RunComfyClient
from storage.sqlite import SQLiteJobStore
from tests.bot.jobs_support import MODEL, ManagerFactory
from tests.clocks import MovableClock

# Recognisable, so a leak into an error text or a log line is easy to spot.
TOKEN = "sk-live-T0KEN-must-never-leak-9c41"
# A valid request of the default model, as the client tests submit it.
INPUTS = {"prompt": "a red fox in the snow", "aspect_ratio": "16:9", "seed": 7}

ClientFactory = Callable[..., RunComfyClient]


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    """A started emulator whose jobs finish at once; tests slow it down through `emulator.config`."""
    config = EmulatorConfig(queue_time=Duration.constant(0.0), run_time=Duration.constant(0.0))
    async with Emulator(config, token=TOKEN, seed=1) as emu:
        yield emu


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


@pytest.fixture
def make_client(emulator: Emulator, session: aiohttp.ClientSession) -> ClientFactory:
    """Build a client against the emulator with tiny timeouts and backoffs; keyword overrides win."""

    def build(**overrides: Any) -> RunComfyClient:
        options: dict[str, Any] = {
            "base_url": emulator.url,
            "model": emulator.config.model_id,
            "token": SecretStr(TOKEN),
            "timeout": 1.0,
            "max_retries": 3,
            "allowed_hosts": ["127.0.0.1"],
            "backoff_base": 0.001,
            "backoff_cap": 0.01,
            "download_timeout": 2.0,
        }
        options.update(overrides)
        return RunComfyClient(session, **options)

    return build


@pytest.fixture
def client(make_client: ClientFactory) -> RunComfyClient:
    return make_client()


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteJobStore]:
    async with await SQLiteJobStore.open(tmp_path / "jobs.sqlite3") as opened:
        yield opened


@pytest.fixture
async def make_manager(
    client: RunComfyClient, store: SQLiteJobStore, clock: MovableClock
) -> AsyncIterator[ManagerFactory]:
    made: list[JobManager] = []

    def build(**options: object) -> JobManager:
        settings: dict[str, object] = {"model": MODEL, "policy": FixedPolicy(0.02), "clock": clock}
        settings.update(options)
        chosen = settings.pop("client", client)
        manager = JobManager(chosen, store, **settings)  # type: ignore[arg-type]
        manager.upstream.retry_cap = 0.05
        made.append(manager)
        return manager

    yield build
    for manager in made:
        await manager.stop(grace=1.0)
