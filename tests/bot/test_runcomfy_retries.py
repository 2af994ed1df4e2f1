"""RunComfyClient against the emulator over real HTTP: GETs retried, a submit never resent, one limiter for all."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import aiohttp
import pytest
from aiolimiter import AsyncLimiter
from pydantic import SecretStr
from tenacity import RetryCallState

from bot.emulator import Emulator, Fault
from bot.runcomfy import (
    RunComfyClient,
    SubmitOutcomeUnknownError,
    TransientError,
    UpstreamState,
    _PreferRetryAfter,
)
from bot.runcomfy_errors import parse_retry_after
from tests.bot.conftest import INPUTS, TOKEN, ClientFactory

# -- retries of GETs ------------------------------------------------------------


async def test_get_retries_429_with_retry_after_seconds(emulator: Emulator, make_client: ClientFactory) -> None:
    client = make_client(backoff_cap=0.2)
    submitted = await client.submit(INPUTS)
    emulator.inject("status", Fault.http(429, retry_after="0.3"))
    started = asyncio.get_running_loop().time()
    status = await client.status(submitted.request_id)
    elapsed = asyncio.get_running_loop().time() - started
    assert status.state is UpstreamState.FINISHED
    assert 0.3 <= elapsed < 1.0
    assert emulator.calls["status"] == 2


async def test_get_retries_429_with_retry_after_http_date(emulator: Emulator, make_client: ClientFactory) -> None:
    client = make_client(backoff_cap=0.5)
    submitted = await client.submit(INPUTS)
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=1), usegmt=True)
    emulator.inject("status", Fault.http(429, retry_after=when))
    started = asyncio.get_running_loop().time()
    await client.status(submitted.request_id)
    assert asyncio.get_running_loop().time() - started < 1.6
    assert emulator.calls["status"] == 2


async def test_retry_after_is_capped(emulator: Emulator, client: RunComfyClient) -> None:
    submitted = await client.submit(INPUTS)
    emulator.inject("status", Fault.http(429, retry_after="3600"))
    await asyncio.wait_for(client.status(submitted.request_id), timeout=2.0)


async def test_get_retries_429_without_retry_after(emulator: Emulator, client: RunComfyClient) -> None:
    submitted = await client.submit(INPUTS)
    emulator.inject("result", Fault.http(429), times=2)
    assert (await client.result(submitted.request_id)).state is UpstreamState.SUCCEEDED
    assert emulator.calls["result"] == 3


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
async def test_get_retries_server_errors(emulator: Emulator, client: RunComfyClient, status: int) -> None:
    submitted = await client.submit(INPUTS)
    emulator.inject("status", Fault.http(status), times=2)
    assert (await client.status(submitted.request_id)).state is UpstreamState.FINISHED
    assert emulator.calls["status"] == 3


async def test_get_gives_up_after_max_retries(emulator: Emulator, make_client: ClientFactory) -> None:
    client = make_client(max_retries=2)
    submitted = await client.submit(INPUTS)
    emulator.inject("status", Fault.http(503), times=10)
    with pytest.raises(TransientError) as caught:
        await client.status(submitted.request_id)
    assert (caught.value.status, caught.value.retryable) == (503, True)
    assert emulator.calls["status"] == 3


async def test_get_retries_timeouts(emulator: Emulator, make_client: ClientFactory) -> None:
    client = make_client(timeout=0.2)
    submitted = await client.submit(INPUTS)
    emulator.inject("result", Fault.slow(0.6))
    assert (await client.result(submitted.request_id)).state is UpstreamState.SUCCEEDED
    assert emulator.calls["result"] == 2


async def test_get_retries_dropped_connections(emulator: Emulator, client: RunComfyClient) -> None:
    submitted = await client.submit(INPUTS)
    # Two drops: aiohttp itself resends an idempotent request once on a dropped connection.
    emulator.inject("status", Fault.drop(), times=2)
    before = client.request_count
    assert (await client.status(submitted.request_id)).state is UpstreamState.FINISHED
    assert client.request_count - before == 2
    assert emulator.dropped == 2


async def test_get_retries_malformed_json(emulator: Emulator, client: RunComfyClient) -> None:
    submitted = await client.submit(INPUTS)
    emulator.inject("result", Fault.malformed())
    emulator.inject("result", Fault.malformed(raw=b'["not", "an", "object"]'))
    assert (await client.result(submitted.request_id)).state is UpstreamState.SUCCEEDED
    assert emulator.calls["result"] == 3


async def test_random_faults_are_survived(emulator: Emulator, make_client: ClientFactory) -> None:
    client = make_client(max_retries=8)
    submitted = await client.submit(INPUTS)
    emulator.config.rate_5xx = 0.3
    emulator.config.rate_429 = 0.2
    emulator.config.malformed_rate = 0.1
    for _ in range(10):
        assert (await client.status(submitted.request_id)).state is UpstreamState.FINISHED
    assert emulator.statuses[503] + emulator.statuses[429] > 0


def test_wait_prefers_retry_after_and_caps_it() -> None:
    wait = _PreferRetryAfter(base=1.0, cap=4.0, retry_after_cap=12.0)
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]  # only outcome matters

    state.set_exception((TransientError, TransientError("x", retry_after=2.5), None))
    assert wait(state) == 2.5
    state.set_exception((TransientError, TransientError("x", retry_after=999.0), None))
    assert wait(state) == 12.0
    state.set_exception((TransientError, TransientError("x"), None))
    state.attempt_number = 10
    assert all(0.0 <= wait(state) <= 4.0 for _ in range(50))


def test_parse_retry_after() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("5", now=now) == 5.0
    assert parse_retry_after("Wed, 01 Jan 2025 12:00:07 GMT", now=now) == 7.0
    assert parse_retry_after("Wed, 01 Jan 2025 11:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("-3") == 0.0


# -- submit is never retried -------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [Fault.drop(process=True), Fault.http(503, process=True), Fault.http(500), Fault.malformed(process=True)],
    ids=["dropped", "503-after-create", "500", "garbage-body"],
)
async def test_lost_submit_answer_is_outcome_unknown_and_never_resent(
    emulator: Emulator, client: RunComfyClient, fault: Fault
) -> None:
    emulator.inject("submit", fault)
    with pytest.raises(SubmitOutcomeUnknownError) as caught:
        await client.submit(INPUTS)
    assert not caught.value.retryable
    assert "billed" in caught.value.user_message
    assert emulator.calls["submit"] == 1
    assert client.request_count == 1
    assert len(emulator.submits) == (1 if fault.process else 0)


async def test_submit_timeout_is_outcome_unknown(emulator: Emulator, make_client: ClientFactory) -> None:
    client = make_client(timeout=0.2)
    emulator.inject("submit", Fault.slow(0.5))
    with pytest.raises(SubmitOutcomeUnknownError):
        await client.submit(INPUTS)
    assert emulator.calls["submit"] == 1
    assert len(emulator.submits) == 1


@pytest.mark.parametrize("body", [{"status": "queued"}, {"request_id": ""}, {"request_id": None}])
async def test_submit_answer_without_request_id_is_outcome_unknown(
    emulator: Emulator, client: RunComfyClient, body: dict[str, Any]
) -> None:
    emulator.inject("submit", Fault.http(200, body))
    with pytest.raises(SubmitOutcomeUnknownError):
        await client.submit(INPUTS)


async def test_submit_429_is_transient_and_not_retried(emulator: Emulator, client: RunComfyClient) -> None:
    emulator.inject("submit", Fault.http(429, retry_after="2"))
    with pytest.raises(TransientError) as caught:
        await client.submit(INPUTS)
    assert not isinstance(caught.value, SubmitOutcomeUnknownError)
    assert (caught.value.status, caught.value.retry_after) == (429, 2.0)
    assert emulator.calls["submit"] == 1
    assert emulator.submits == []


async def test_submit_to_a_closed_port_is_transient(session: aiohttp.ClientSession) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = RunComfyClient(session, base_url=f"http://127.0.0.1:{port}", model="m", token=SecretStr(TOKEN))
    with pytest.raises(TransientError) as caught:
        await client.submit(INPUTS)
    assert not isinstance(caught.value, SubmitOutcomeUnknownError)


# -- the shared limiter ---------------------------------------------------------


class CountingLimiter(AsyncLimiter):
    def __init__(self) -> None:
        super().__init__(1000, 1)
        self.acquired = 0

    async def acquire(self, amount: float = 1) -> None:
        self.acquired += 1
        await super().acquire(amount)


async def test_limiter_is_awaited_for_every_attempt(emulator: Emulator, make_client: ClientFactory) -> None:
    limiter = CountingLimiter()
    client = make_client(limiter=limiter)
    submitted = await client.submit(INPUTS)
    emulator.inject("status", Fault.http(503), times=2)
    emulator.inject("result", Fault.http(429))
    emulator.inject("file", Fault.http(503))
    await client.status(submitted.request_id)
    result = await client.result(submitted.request_id)
    await client.download_image(result.image_urls[0])
    await client.model_info()

    assert sum(emulator.calls.values()) == 1 + 3 + 2 + 2 + 1
    assert limiter.acquired == client.request_count == sum(emulator.calls.values())
