"""RunComfyClient against the emulator over real HTTP: every answer kind, failed jobs, cancel, what must never leak.

Its typed errors are tests/bot/test_runcomfy_errors.py; its retries, and the submit it never resends,
tests/bot/test_runcomfy_retries.py.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest
from pydantic import SecretStr

from bot.emulator import Duration, Emulator, Fault
from bot.emulator_config import CostShape
from bot.runcomfy import (
    CancelResult,
    ModerationError,
    RequestResult,
    RequestStatus,
    RunComfyClient,
    RunComfyError,
    UpstreamJobFailedError,
    UpstreamState,
    extract_image_urls,
    failure_from_result,
    normalize_state,
)
from bot.settings import Settings
from tests.bot.conftest import INPUTS, TOKEN


async def submit_and_finish(client: RunComfyClient) -> RequestResult:
    submitted = await client.submit(INPUTS)
    return await client.result(submitted.request_id)


# -- success paths -------------------------------------------------------------


@pytest.mark.parametrize("shape", ["images", "image", "nested"])
async def test_success_with_each_output_shape(emulator: Emulator, client: RunComfyClient, shape: str) -> None:
    emulator.config.output_shape = shape  # type: ignore[assignment]  # a Literal, set from a parametrized str
    submitted = await client.submit(INPUTS)
    assert submitted.status_url == f"{emulator.url}/v1/requests/{submitted.request_id}/status"

    status = await client.status(submitted.request_id)
    assert status.state is UpstreamState.FINISHED
    result = await client.result(submitted.request_id)
    assert result.state is UpstreamState.SUCCEEDED
    assert result.failure() is None
    assert result.image_urls == [emulator.file_url(submitted.request_id)]
    assert result.created_at
    assert result.finished_at

    image = await client.download_image(result.image_urls[0])
    assert (image.format, image.width, image.height, image.content_type) == ("PNG", 256, 144, "image/png")


async def test_queue_then_run_then_finish(emulator: Emulator, client: RunComfyClient) -> None:
    emulator.config.queue_time = Duration.constant(0.3)
    emulator.config.run_time = Duration.constant(0.3)
    emulator.config.queue_position_start = 3
    submitted = await client.submit(INPUTS)

    first = await client.status(submitted.request_id)
    assert first.state is UpstreamState.QUEUED
    assert first.queue_position == 3
    unfinished = await client.result(submitted.request_id)
    assert unfinished.state is UpstreamState.QUEUED
    assert unfinished.image_urls == []
    assert unfinished.failure() is None

    await asyncio.sleep(0.35)
    assert (await client.status(submitted.request_id)).state is UpstreamState.RUNNING
    await asyncio.sleep(0.3)
    assert (await client.status(submitted.request_id)).state is UpstreamState.FINISHED


async def test_include_cost_reads_each_cost_shape(emulator: Emulator, client: RunComfyClient) -> None:
    submitted = await client.submit(INPUTS)
    assert (await client.result(submitted.request_id)).cost_usd is None
    shapes: tuple[CostShape, ...] = ("cost", "cost_usd", "billing")
    for shape in shapes:
        emulator.config.cost_shape = shape
        result = await client.result(submitted.request_id, include_cost=True)
        assert result.cost_usd == pytest.approx(0.03), shape


async def test_model_info(client: RunComfyClient) -> None:
    info = await client.model_info()
    assert info.model_id == "imagineart/imagineart-1.5-preview/text-to-image"
    assert info.base_price_usd == pytest.approx(0.03)
    assert "prompt" in info.model_extra["input_schema"]["properties"]  # type: ignore[index]  # extras are Any


async def test_unknown_state_string_is_kept_and_normalised_to_unknown(
    emulator: Emulator, client: RunComfyClient
) -> None:
    emulator.config.queue_time = Duration.constant(5.0)
    emulator.config.unknown_state = "warming_up"
    submitted = await client.submit(INPUTS)
    status = await client.status(submitted.request_id)
    assert (status.status, status.state) == ("warming_up", UpstreamState.UNKNOWN)
    result = await client.result(submitted.request_id)
    assert result.state is UpstreamState.UNKNOWN
    assert result.failure() is None


# -- failed jobs ---------------------------------------------------------------


async def test_completed_on_status_failed_on_result(emulator: Emulator, client: RunComfyClient) -> None:
    emulator.config.failure_rate = 1.0
    submitted = await client.submit(INPUTS)
    assert (await client.status(submitted.request_id)).state is UpstreamState.FINISHED
    result = await client.result(submitted.request_id)
    assert result.state is UpstreamState.FAILED
    failure = result.failure()
    assert isinstance(failure, UpstreamJobFailedError)
    assert not failure.retryable
    assert "worker error" in str(failure)
    assert failure_from_result(result).__class__ is UpstreamJobFailedError
    with pytest.raises(UpstreamJobFailedError):
        result.raise_for_failure()


async def test_moderation_failure_is_told_apart_without_echoing_the_prompt(
    emulator: Emulator, client: RunComfyClient
) -> None:
    emulator.config.failure_rate = 1.0
    emulator.config.failure_message = "Output flagged as NSFW by the safety checker"
    result = await submit_and_finish(client)
    failure = result.failure()
    assert isinstance(failure, ModerationError)
    assert "fox" not in failure.user_message
    assert "refused" in failure.user_message


async def test_a_refused_prompt_at_submit_is_moderation(emulator: Emulator, client: RunComfyClient) -> None:
    emulator.inject("submit", Fault.http(400, {"error_message": "Prompt rejected by content moderation"}))
    with pytest.raises(ModerationError) as caught:
        await client.submit(INPUTS)
    assert (caught.value.status, caught.value.retryable) == (400, False)


def test_error_inside_a_final_result_is_a_failure() -> None:
    result = RequestResult.model_validate({"status": "completed", "error": "model crashed", "output": None})
    assert isinstance(result.failure(), UpstreamJobFailedError)
    fine = RequestResult.model_validate({"status": "succeeded", "output": {"images": ["https://a.runcomfy.net/x"]}})
    assert fine.failure() is None


# -- cancel ---------------------------------------------------------------------


async def test_cancel_while_queued(emulator: Emulator, client: RunComfyClient) -> None:
    emulator.config.queue_time = Duration.constant(5.0)
    submitted = await client.submit(INPUTS)
    answer = await client.cancel(submitted.request_id)
    assert (answer.outcome, answer.cancelled) == ("cancelled", True)
    assert (await client.status(submitted.request_id)).state is UpstreamState.CANCELLED
    assert (await client.result(submitted.request_id)).state is UpstreamState.CANCELLED


async def test_cancel_while_running_is_not_cancellable(emulator: Emulator, client: RunComfyClient) -> None:
    emulator.config.run_time = Duration.constant(5.0)
    submitted = await client.submit(INPUTS)
    answer = await client.cancel(submitted.request_id)
    assert (answer.outcome, answer.cancelled) == ("not_cancellable", False)
    assert (await client.status(submitted.request_id)).state is UpstreamState.RUNNING


async def test_cancel_retries_like_a_get(emulator: Emulator, client: RunComfyClient) -> None:
    emulator.config.queue_time = Duration.constant(5.0)
    submitted = await client.submit(INPUTS)
    emulator.inject("cancel", Fault.http(502))
    assert (await client.cancel(submitted.request_id)).cancelled
    assert emulator.calls["cancel"] == 2


def test_only_the_cancelled_outcome_counts() -> None:
    for outcome, cancelled in [("cancelled", True), ("not_cancellable", False), ("queued", False), (None, False)]:
        assert CancelResult(request_id="r", status="x", outcome=outcome).cancelled is cancelled


# -- secrets ----------------------------------------------------------------------


async def test_token_never_leaks_into_errors_or_logs(
    emulator: Emulator, client: RunComfyClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    submitted = await client.submit({"prompt": "ok"})
    emulator.inject("submit", Fault.http(400, {"error_message": f"bad header Bearer {TOKEN}"}))
    emulator.inject("status", Fault.http(503, {"message": f"token {TOKEN} throttled"}), times=10)
    emulator.inject("result", Fault.drop(), times=10)
    emulator.inject("cancel", Fault.error_code(400004, message=f"{TOKEN} revoked"))
    emulator.config.result_kind = "html"
    calls = [
        client.submit(INPUTS),
        client.status(submitted.request_id),
        client.result(submitted.request_id),
        client.cancel(submitted.request_id),
        client.download_image(emulator.file_url(submitted.request_id)),
    ]
    for call in calls:
        with pytest.raises(RunComfyError) as caught:
            await call
        errors.append(caught.value)

    for error in errors:
        chain: BaseException | None = error
        while chain is not None:
            assert TOKEN not in str(chain)
            assert TOKEN not in repr(chain)
            chain = chain.__cause__ or chain.__context__
        assert TOKEN not in getattr(error, "user_message", "")
    assert TOKEN not in repr(client)
    assert TOKEN not in caplog.text
    assert "retry" in caplog.text  # the retries were logged, just without the token


async def test_authorization_goes_to_the_api_only(emulator: Emulator, client: RunComfyClient) -> None:
    result = await submit_and_finish(client)
    await client.download_image(result.image_urls[0])
    assert emulator.last_headers["result"]["Authorization"] == f"Bearer {TOKEN}"
    assert "Authorization" not in emulator.last_headers["file"]


# -- construction and pure helpers ----------------------------------------------------


async def test_from_settings_uses_the_settings(session: aiohttp.ClientSession) -> None:
    settings = Settings(
        runcomfy_base_url="http://127.0.0.1:9/",
        runcomfy_http_timeout_seconds=3.0,
        runcomfy_max_retries=1,
        download_max_bytes=1234,
        _env_file=None,
    )
    client = RunComfyClient.from_settings(session, settings, token=SecretStr(TOKEN))
    assert client.base_url == "http://127.0.0.1:9"
    assert client.model == settings.runcomfy_model
    assert (client.max_retries, client.max_download_bytes) == (1, 1234)
    assert client._host_policy.allows("127.0.0.1")
    assert client._host_policy.allows("images.runcomfy.net")


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        ("in_queue", UpstreamState.QUEUED),
        ("QUEUED", UpstreamState.QUEUED),
        ("in_progress", UpstreamState.RUNNING),
        ("Running", UpstreamState.RUNNING),
        ("completed", UpstreamState.FINISHED),
        ("succeeded", UpstreamState.SUCCEEDED),
        ("success", UpstreamState.SUCCEEDED),
        ("failed", UpstreamState.FAILED),
        ("error", UpstreamState.FAILED),
        ("cancelled", UpstreamState.CANCELLED),
        ("canceled", UpstreamState.CANCELLED),
        ("warming_up", UpstreamState.UNKNOWN),
        ("", UpstreamState.UNKNOWN),
        (None, UpstreamState.UNKNOWN),
    ],
)
def test_normalize_state(raw: str | None, state: UpstreamState) -> None:
    assert normalize_state(raw) is state


def test_extract_image_urls_prefers_images_then_image_then_walks_output() -> None:
    a, b, c = "https://a.runcomfy.net/1.png", "https://a.runcomfy.net/2.png", "https://a.runcomfy.net/3.png"
    assert extract_image_urls({"images": [a, {"url": b}, a, "not a url"], "image": c}) == [a, b, c]
    assert extract_image_urls({"image": a}) == [a]
    assert extract_image_urls({"result": {"files": [{"url": a}, {"url": b}]}, "meta": [c, 5]}) == [a, b, c]
    assert extract_image_urls({"images": []}) == []
    assert extract_image_urls(None) == []


def test_results_parse_leniently() -> None:
    result = RequestResult.model_validate(
        {"status": None, "output": "https://a.runcomfy.net/x.png", "created_at": 1700000000, "extra": {"a": 1}}
    )
    assert (result.state, result.image_urls, result.created_at) == (
        UpstreamState.UNKNOWN,
        ["https://a.runcomfy.net/x.png"],
        "1700000000",
    )
    assert RequestResult.model_validate({"status": "succeeded", "cost": "$0.05"}).cost_usd == 0.05
    assert RequestResult.model_validate({"status": "succeeded", "cost": {"amount": 0.07}}).cost_usd == 0.07
    assert RequestResult.model_validate({"status": "succeeded", "usage": {"cost_usd": "0.02"}}).cost_usd == 0.02
    assert RequestResult.model_validate({"status": "succeeded", "cost": "n/a"}).cost_usd is None
    assert RequestStatus.model_validate({"status": "in_queue", "queue_position": "4"}).queue_position == 4
