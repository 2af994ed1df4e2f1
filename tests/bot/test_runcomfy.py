"""RunComfyClient against the emulator over real HTTP: every answer kind, retries, and what must never leak."""

from __future__ import annotations

import asyncio
import logging
import socket
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import aiohttp
import pytest
from aiolimiter import AsyncLimiter
from pydantic import SecretStr
from tenacity import RetryCallState

from bot.emulator import Duration, Emulator, Fault
from bot.emulator_config import CostShape
from bot.runcomfy import (
    AuthError,
    BalanceError,
    CancelResult,
    ForbiddenRequestError,
    InvalidInputError,
    InvalidModelError,
    ModerationError,
    RequestNotFoundError,
    RequestResult,
    RequestStatus,
    RunComfyClient,
    RunComfyError,
    SubmitOutcomeUnknownError,
    TransientError,
    UpstreamJobFailedError,
    UpstreamState,
    _PreferRetryAfter,
    extract_image_urls,
    failure_from_result,
    normalize_state,
)
from bot.runcomfy_errors import error_from_answer, field_from_detail, parse_retry_after
from bot.settings import Settings
from tests.bot.conftest import TOKEN, ClientFactory

INPUTS = {"prompt": "a red fox in the snow", "aspect_ratio": "16:9", "seed": 7}


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


# -- error codes and HTTP statuses ------------------------------------------------


async def test_bad_token_is_an_auth_error(make_client: ClientFactory) -> None:
    client = make_client(token=SecretStr("wrong"))
    with pytest.raises(AuthError) as caught:
        await client.submit(INPUTS)
    assert (caught.value.code, caught.value.status, caught.value.retryable) == (400004, 401, False)
    assert "operator" in caught.value.user_message


async def test_missing_token_is_an_auth_error(make_client: ClientFactory) -> None:
    with pytest.raises(AuthError):
        await make_client(token=None).model_info()


async def test_unknown_model_is_invalid_model(make_client: ClientFactory) -> None:
    client = make_client(model="nobody/no-such-model/v1")
    with pytest.raises(InvalidModelError) as caught:
        await client.submit(INPUTS)
    assert caught.value.code == 400001


async def test_no_balance_is_a_balance_error(emulator: Emulator, client: RunComfyClient) -> None:
    emulator.config.balance_usd = 0.04
    await client.submit(INPUTS)
    with pytest.raises(BalanceError) as caught:
        await client.submit(INPUTS)
    assert (caught.value.code, caught.value.status) == (400002, 402)
    assert len(emulator.submits) == 1


async def test_request_of_another_account_is_forbidden(emulator: Emulator, make_client: ClientFactory) -> None:
    emulator.config.extra_tokens = ("other-account-token",)
    other = make_client(token=SecretStr("other-account-token"))
    submitted = await other.submit(INPUTS)
    with pytest.raises(ForbiddenRequestError) as caught:
        await make_client().status(submitted.request_id)
    assert (caught.value.code, caught.value.status) == (403001, 403)


async def test_unknown_request_id_is_not_found(client: RunComfyClient) -> None:
    with pytest.raises(RequestNotFoundError) as caught:
        await client.result("00000000-0000-4000-8000-000000000000")
    assert (caught.value.code, caught.value.status) == (404001, 404)
    assert client.request_count == 1  # not retried


async def test_expired_request_id_is_not_found(emulator: Emulator, client: RunComfyClient) -> None:
    submitted = await client.submit(INPUTS)
    emulator.expire(submitted.request_id)
    with pytest.raises(RequestNotFoundError):
        await client.status(submitted.request_id)


@pytest.mark.parametrize(
    ("inputs", "field"),
    [
        ({"aspect_ratio": "1:1"}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x" * 2049}, "prompt"),
        ({"prompt": "a fox", "aspect_ratio": "5:4"}, "aspect_ratio"),
        ({"prompt": "a fox", "seed": -1}, "seed"),
        ({"prompt": "a fox", "seed": "7"}, "seed"),
    ],
)
async def test_invalid_input_names_the_field(
    emulator: Emulator, client: RunComfyClient, inputs: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        await client.submit(inputs)
    assert (caught.value.status, caught.value.field) == (422, field)
    assert f"`{field}`" in caught.value.user_message
    assert emulator.submits == []


@pytest.mark.parametrize(
    ("fault", "error_type", "code", "status"),
    [
        (Fault.http(400, {"detail": "seed: must be an integer"}), InvalidInputError, None, 400),
        (Fault.http(400, {"error_code": 400001, "error_message": "bad model"}), InvalidModelError, 400001, 400),
        (Fault.http(402, {"message": "pay up"}), BalanceError, None, 402),
        (Fault.http(403, {"error": "revoked"}), AuthError, None, 403),
        (Fault.http(403, {"error_code": 403001, "error_message": "not yours"}), ForbiddenRequestError, 403001, 403),
        (Fault.http(404, {"detail": "Not Found"}), RequestNotFoundError, None, 404),
        (Fault.error_code(400004), AuthError, 400004, 200),
        (Fault.error_code(400002), BalanceError, 400002, 200),
        (Fault.error_code(404001), RequestNotFoundError, 404001, 200),
        (Fault.error_code(999999), RunComfyError, 999999, 200),
        (Fault.http(418, {"error_message": "teapot"}), RunComfyError, None, 418),
    ],
)
async def test_answers_map_to_typed_errors(
    emulator: Emulator,
    client: RunComfyClient,
    fault: Fault,
    error_type: type[RunComfyError],
    code: int | None,
    status: int,
) -> None:
    submitted = await client.submit(INPUTS)
    emulator.inject("status", fault)
    with pytest.raises(RunComfyError) as caught:
        await client.status(submitted.request_id)
    assert type(caught.value) is error_type
    assert (caught.value.code, caught.value.status, caught.value.retryable) == (code, status, False)
    assert emulator.calls["status"] == 1


async def test_invalid_input_field_from_a_string_detail(emulator: Emulator, client: RunComfyClient) -> None:
    emulator.inject("submit", Fault.http(400, {"detail": "seed: must be an integer"}))
    with pytest.raises(InvalidInputError) as caught:
        await client.submit(INPUTS)
    assert caught.value.field == "seed"


def test_message_keys_are_read_in_order() -> None:
    body = {"detail": "d", "error": "e", "message": "m", "error_message": "em", "error_code": "400002"}
    error = error_from_answer(200, body, operation="status")
    assert isinstance(error, BalanceError)
    assert error.message.endswith(": em")
    assert error_from_answer(500, {"message": "m", "error": "e"}, operation="x").message.endswith(": m")  # type: ignore[union-attr]  # not None here


def test_a_job_status_next_to_an_unknown_code_is_not_a_call_error() -> None:
    assert error_from_answer(200, {"status": "failed", "error_code": 500123}, operation="result") is None


@pytest.mark.parametrize(
    ("detail", "field"),
    [
        ([{"loc": ["body", "aspect_ratio"], "msg": "bad"}], "aspect_ratio"),
        ({"field": "seed"}, "seed"),
        ("prompt: too long", "prompt"),
        ("invalid field 'seed'", "seed"),
        ("something went wrong", None),
        (None, None),
    ],
)
def test_field_from_detail(detail: Any, field: str | None) -> None:
    assert field_from_detail(detail) == field


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
