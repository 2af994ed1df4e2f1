"""RunComfyClient against the emulator over real HTTP: each error code and HTTP status, as a typed error."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr

from bot.emulator import Emulator, Fault
from bot.runcomfy import (
    AuthError,
    BalanceError,
    ForbiddenRequestError,
    InvalidInputError,
    InvalidModelError,
    RequestNotFoundError,
    RunComfyClient,
    RunComfyError,
)
from bot.runcomfy_errors import error_from_answer, field_from_detail
from tests.bot.conftest import INPUTS, ClientFactory


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
