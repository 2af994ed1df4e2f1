"""The emulator's own behaviour, seen on the wire with a bare aiohttp session: protocol, time model, switches."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import random
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDictProxy
from PIL import Image

from bot.emulator import Duration, Emulator, EmulatorConfig, Fault
from bot.emulator_images import image_size, render_png
from bot.model_spec import RATIO_VALUES, RENDER_SIZES
from tests.bot.conftest import TOKEN

AUTH = {"Authorization": f"Bearer {TOKEN}"}
BODY = {"prompt": "a paper boat", "aspect_ratio": "1:1", "seed": 3}


async def call(
    session: aiohttp.ClientSession, method: str, url: str, *, json_body: Any = None, auth: bool = True
) -> tuple[int, Any, CIMultiDictProxy[str]]:
    async with session.request(method, url, json=json_body, headers=AUTH if auth else {}) as resp:
        raw = await resp.read()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw
        return resp.status, body, resp.headers


def submit_url(emu: Emulator) -> str:
    return f"{emu.url}/v1/models/{emu.config.model_id}"


async def submit(emu: Emulator, session: aiohttp.ClientSession, body: dict[str, Any] | None = None) -> str:
    status, answer, _ = await call(session, "POST", submit_url(emu), json_body=body or BODY)
    assert status == 200, answer
    request_id: str = answer["request_id"]
    return request_id


async def status_of(emu: Emulator, session: aiohttp.ClientSession, request_id: str) -> dict[str, Any]:
    code, body, _ = await call(session, "GET", f"{emu.url}/v1/requests/{request_id}/status")
    assert code == 200, body
    answer: dict[str, Any] = body
    return answer


# -- protocol ----------------------------------------------------------------------


async def test_submit_answers_with_urls_on_its_own_base(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    status, body, _ = await call(session, "POST", submit_url(emulator), json_body=BODY)
    assert status == 200
    rid = body["request_id"]
    assert body == {
        "request_id": rid,
        "status_url": f"{emulator.url}/v1/requests/{rid}/status",
        "result_url": f"{emulator.url}/v1/requests/{rid}/result",
        "cancel_url": f"{emulator.url}/v1/requests/{rid}/cancel",
    }
    assert emulator.submits[0].body == BODY
    assert emulator.submits[0].request_id == rid


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {TOKEN}"}])
async def test_every_api_route_needs_the_bearer_token(
    emulator: Emulator, session: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    rid = await submit(emulator, session)
    for method, path in [
        ("POST", f"/v1/models/{emulator.config.model_id}"),
        ("GET", f"/v1/models/{emulator.config.model_id}"),
        ("GET", f"/v1/requests/{rid}/status"),
        ("GET", f"/v1/requests/{rid}/result"),
        ("POST", f"/v1/requests/{rid}/cancel"),
    ]:
        async with session.request(method, emulator.url + path, json=BODY, headers=headers) as resp:
            assert resp.status == 401, path
            assert (await resp.json())["error_code"] == 400004


async def test_unknown_model_is_400001(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    for method in ("POST", "GET"):
        status, body, _ = await call(session, method, f"{emulator.url}/v1/models/a/b/c", json_body=BODY)
        assert (status, body["error_code"]) == (400, 400001)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": 5}, "prompt"),
        ({"prompt": "x", "aspect_ratio": "2:1"}, "aspect_ratio"),
        ({"prompt": "x", "seed": 2**31}, "seed"),
        ({"prompt": "x", "seed": True}, "seed"),
        ({"prompt": "x", "seed": 1.5}, "seed"),
    ],
)
async def test_validation_answers_422_naming_the_field(
    emulator: Emulator, session: aiohttp.ClientSession, body: dict[str, Any], field: str
) -> None:
    status, answer, _ = await call(session, "POST", submit_url(emulator), json_body=body)
    assert status == 422
    assert answer["detail"][0]["loc"] == ["body", field]
    assert emulator.submits == []


async def test_prompt_limit_is_configurable(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    emulator.config.max_prompt_chars = 10
    url = f"{emulator.url}/v1/models/{emulator.config.model_id}"
    assert (await call(session, "POST", url, json_body={"prompt": "x" * 10}))[0] == 200
    assert (await call(session, "POST", url, json_body={"prompt": "x" * 11}))[0] == 422


async def test_a_body_that_is_not_an_object_is_400(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    assert (await call(session, "POST", submit_url(emulator), json_body=[1]))[0] == 400


async def test_unknown_request_is_404001(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    for method, action in (("GET", "status"), ("GET", "result"), ("POST", "cancel")):
        status, body, _ = await call(session, method, f"{emulator.url}/v1/requests/nope/{action}")
        assert (status, body["error_code"]) == (404, 404001)


async def test_model_info_has_schema_and_price(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    emulator.config.base_price_usd = 0.05
    status, body, _ = await call(session, "GET", f"{emulator.url}/v1/models/{emulator.config.model_id}")
    assert status == 200
    assert body["base_price_usd"] == 0.05
    assert sorted(body["input_schema"]["properties"]["aspect_ratio"]["enum"]) == sorted(RATIO_VALUES)


# -- time model --------------------------------------------------------------------


async def test_queue_position_counts_down_then_runs_then_completes(
    emulator: Emulator, session: aiohttp.ClientSession
) -> None:
    emulator.config.queue_time = Duration.constant(0.4)
    emulator.config.run_time = Duration.constant(0.2)
    emulator.config.queue_position_start = 4
    rid = await submit(emulator, session)
    loop = asyncio.get_running_loop()
    positions = []
    while (answer := await status_of(emulator, session, rid))["status"] == "in_queue":
        positions.append(answer["queue_position"])
        await asyncio.sleep(0.05)
    assert positions[0] == 4
    assert positions[-1] == 1
    assert positions == sorted(positions, reverse=True)
    assert answer["status"] == "in_progress"
    assert "queue_position" not in answer
    assert rid not in emulator.finished_at_monotonic
    await asyncio.sleep(0.25)
    assert (await status_of(emulator, session, rid))["status"] == "completed"
    finished = emulator.finished_at_monotonic[rid]
    assert finished == pytest.approx(emulator.submits[0].received_at + 0.6)
    assert finished <= loop.time()


async def test_derived_queue_position(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    emulator.config.queue_time = Duration.constant(3.0)
    emulator.config.seconds_per_queue_position = 0.5
    rid = await submit(emulator, session)
    assert (await status_of(emulator, session, rid))["queue_position"] == 6


async def test_timings_are_reproducible_from_the_seed(session: aiohttp.ClientSession) -> None:
    def config() -> EmulatorConfig:
        return EmulatorConfig(queue_time=Duration.uniform(1, 9), run_time=Duration.lognormal(5, 0.5, 20))

    waits = []
    for seed in (7, 7, 8):
        async with Emulator(config(), token=TOKEN, seed=seed) as emu:
            for _ in range(3):
                await submit(emu, session)
            waits.append([(job.request_id, job.queue_wait, job.run_time) for job in emu.jobs.values()])
    assert waits[0] == waits[1]
    assert waits[0] != waits[2]


def test_durations() -> None:
    rng = random.Random(1)
    assert Duration.constant(2.5).sample(rng) == 2.5
    assert all(1 <= Duration.uniform(1, 2).sample(rng) <= 2 for _ in range(100))
    samples = [Duration.lognormal(4, 0.5, cap=6).sample(rng) for _ in range(2000)]
    assert max(samples) == 6
    assert 3.5 < sorted(samples)[1000] < 4.5
    assert Duration.parse("3") == Duration.constant(3)
    assert Duration.parse("uniform:1,5") == Duration.uniform(1, 5)
    assert Duration.parse("lognormal:8,0.4,60") == Duration.lognormal(8, 0.4, 60)
    assert Duration.parse("lognormal:8,0.4").cap == math.inf
    with pytest.raises(argparse.ArgumentTypeError):
        Duration.parse("gamma:1,2")


# -- job outcomes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ("images", lambda url: {"images": [url]}),
        ("image", lambda url: {"image": url}),
        ("nested", lambda url: {"result": {"files": [{"url": url, "content_type": "image/png"}]}}),
    ],
)
async def test_output_shapes(emulator: Emulator, session: aiohttp.ClientSession, shape: str, expected: Any) -> None:
    emulator.config.output_shape = shape  # type: ignore[assignment]  # Literal from a parametrized str
    rid = await submit(emulator, session)
    _, body, _ = await call(session, "GET", f"{emulator.url}/v1/requests/{rid}/result")
    assert body["status"] == "succeeded"
    assert body["output"] == expected(emulator.file_url(rid))
    assert body["created_at"].endswith("Z")
    assert body["finished_at"].endswith("Z")
    assert "cost" not in body


async def test_failure_rate_completes_on_status_and_fails_on_result(
    emulator: Emulator, session: aiohttp.ClientSession
) -> None:
    emulator.config.failure_rate = 1.0
    emulator.config.failure_message = "boom"
    rid = await submit(emulator, session)
    assert (await status_of(emulator, session, rid))["status"] == "completed"
    _, body, _ = await call(session, "GET", f"{emulator.url}/v1/requests/{rid}/result")
    assert body["status"] == "failed"
    assert body["error"]["error_message"] == "boom"
    assert "output" not in body
    async with session.get(emulator.file_url(rid)) as resp:
        assert resp.status == 404


async def test_include_cost_shapes(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    rid = await submit(emulator, session)
    url = f"{emulator.url}/v1/requests/{rid}/result?include_cost=true"
    for shape, key, value in [("cost", "cost", 0.03), ("cost_usd", "cost_usd", 0.03)]:
        emulator.config.cost_shape = shape  # type: ignore[assignment]  # Literal from a str
        assert (await call(session, "GET", url))[1][key] == value
    emulator.config.cost_shape = "billing"
    assert (await call(session, "GET", url))[1]["billing"]["cost"] == 0.03


async def test_unknown_state_replaces_unfinished_states(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    emulator.config.unknown_state = "warming_up"
    emulator.config.queue_time = Duration.constant(0.2)
    rid = await submit(emulator, session)
    assert (await status_of(emulator, session, rid))["status"] == "warming_up"
    _, body, _ = await call(session, "GET", f"{emulator.url}/v1/requests/{rid}/result")
    assert body["status"] == "warming_up"
    await asyncio.sleep(0.25)
    assert (await status_of(emulator, session, rid))["status"] == "completed"


async def test_cancel_only_while_queued(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    emulator.config.queue_time = Duration.constant(5)
    queued = await submit(emulator, session)
    emulator.config.queue_time = Duration.constant(0)
    emulator.config.run_time = Duration.constant(5)
    running = await submit(emulator, session)

    status, body, _ = await call(session, "POST", f"{emulator.url}/v1/requests/{queued}/cancel")
    assert (status, body["outcome"], body["status"]) == (202, "cancelled", "cancelled")
    status, body, _ = await call(session, "POST", f"{emulator.url}/v1/requests/{running}/cancel")
    assert (status, body["outcome"], body["status"]) == (202, "not_cancellable", "in_progress")
    _, body, _ = await call(session, "POST", f"{emulator.url}/v1/requests/{queued}/cancel")
    assert body["outcome"] == "not_cancellable"
    assert queued not in emulator.finished_at_monotonic


async def test_expiry_after_n_seconds_and_on_demand(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    emulator.config.expire_after = 0.1
    rid = await submit(emulator, session)
    assert (await status_of(emulator, session, rid))["status"] == "completed"
    await asyncio.sleep(0.15)
    status, body, _ = await call(session, "GET", f"{emulator.url}/v1/requests/{rid}/result")
    assert (status, body["error_code"]) == (404, 404001)

    emulator.config.expire_after = None
    other = await submit(emulator, session)
    emulator.expire(other)
    assert (await call(session, "GET", f"{emulator.url}/v1/requests/{other}/status"))[0] == 404


async def test_balance_runs_out(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    emulator.config.balance_usd = 0.07
    await submit(emulator, session)
    await submit(emulator, session)
    status, body, _ = await call(session, "POST", submit_url(emulator), json_body=BODY)
    assert (status, body["error_code"]) == (402, 400002)
    assert emulator.config.balance_usd == pytest.approx(0.01)


async def test_other_accounts_requests_are_403001(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    emulator.config.extra_tokens = ("second",)
    url = f"{emulator.url}/v1/models/{emulator.config.model_id}"
    async with session.post(url, json=BODY, headers={"Authorization": "Bearer second"}) as resp:
        rid = (await resp.json())["request_id"]
    status, body, _ = await call(session, "GET", f"{emulator.url}/v1/requests/{rid}/status")
    assert (status, body["error_code"]) == (403, 403001)


# -- faults: rates and scripted ---------------------------------------------------------


async def test_rate_429_with_and_without_retry_after(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    rid = await submit(emulator, session)
    emulator.config.rate_429 = 1.0
    status, _, headers = await call(session, "GET", f"{emulator.url}/v1/requests/{rid}/status")
    assert (status, headers["Retry-After"]) == (429, "1")
    emulator.config.retry_after = None
    status, _, headers = await call(session, "GET", f"{emulator.url}/v1/requests/{rid}/status")
    assert status == 429
    assert "Retry-After" not in headers
    emulator.config.rate_429 = 0.0
    assert (await call(session, "GET", f"{emulator.url}/v1/requests/{rid}/status"))[0] == 200


async def test_rate_5xx(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    emulator.config.rate_5xx = 1.0
    emulator.config.status_5xx = 502
    assert (await call(session, "GET", f"{emulator.url}/v1/models/{emulator.config.model_id}"))[0] == 502
    assert emulator.statuses[502] == 1


async def test_rates_apply_only_to_fault_routes(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    emulator.config.rate_5xx = 1.0
    emulator.config.fault_routes = frozenset({"status"})
    rid = await submit(emulator, session)
    assert (await call(session, "GET", f"{emulator.url}/v1/requests/{rid}/status"))[0] == 503
    assert (await call(session, "GET", f"{emulator.url}/v1/requests/{rid}/result"))[0] == 200


async def test_slow_rate_delays_answers(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    emulator.config.slow_rate = 1.0
    emulator.config.slow_seconds = 0.2
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert (await call(session, "GET", f"{emulator.url}/v1/models/{emulator.config.model_id}"))[0] == 200
    assert loop.time() - started >= 0.2


async def test_drop_rate_closes_connections(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    emulator.config.drop_rate = 1.0
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await call(session, "GET", f"{emulator.url}/v1/models/{emulator.config.model_id}")
    assert emulator.dropped >= 1


async def test_malformed_rate(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    emulator.config.malformed_rate = 1.0
    status, body, headers = await call(session, "GET", f"{emulator.url}/v1/models/{emulator.config.model_id}")
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert isinstance(body, bytes)


async def test_error_code_rate_sends_200_with_error_code(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    emulator.config.error_code_rate = 1.0
    emulator.config.error_code = 400002
    status, body, _ = await call(session, "GET", f"{emulator.url}/v1/models/{emulator.config.model_id}")
    assert (status, body["error_code"]) == (200, 400002)


async def test_random_submit_faults_sometimes_create_the_job(
    emulator: Emulator, session: aiohttp.ClientSession
) -> None:
    emulator.config.rate_5xx = 1.0
    url = f"{emulator.url}/v1/models/{emulator.config.model_id}"
    for _ in range(20):
        assert (await call(session, "POST", url, json_body=BODY))[0] == 503
    assert 0 < len(emulator.submits) < 20  # some answers were lost after the job existed


async def test_inject_applies_n_times_in_order(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    url = f"{emulator.url}/v1/models/{emulator.config.model_id}"
    emulator.inject("model", Fault.http(503, retry_after=1), times=2)
    emulator.inject("model", Fault.error_code(400001, status=400))
    first = await call(session, "GET", url)
    assert (first[0], first[2]["Retry-After"]) == (503, "1")
    assert (await call(session, "GET", url))[0] == 503
    assert (await call(session, "GET", url))[1]["error_code"] == 400001
    assert (await call(session, "GET", url))[0] == 200
    assert emulator.calls["model"] == 4
    assert emulator.statuses == {503: 2, 400: 1, 200: 1}
    with pytest.raises(ValueError, match="unknown route"):
        emulator.inject("nope", Fault.drop())


async def test_injected_lost_answer_still_creates_the_job(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    emulator.inject("submit", Fault.drop(process=True))
    emulator.inject("submit", Fault.http(503))
    url = f"{emulator.url}/v1/models/{emulator.config.model_id}"
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await call(session, "POST", url, json_body=BODY)
    assert (await call(session, "POST", url, json_body=BODY))[0] == 503
    assert emulator.calls["submit"] == 2
    assert len(emulator.submits) == 1


async def test_submits_for_counts_with_defaults(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    await submit(emulator, session, {"prompt": "p"})
    await submit(emulator, session, {"prompt": "p", "seed": 0, "aspect_ratio": "1:1"})
    await submit(emulator, session, {"prompt": "p", "seed": 4, "aspect_ratio": "16:9"})
    assert emulator.submits_for("p", 0, "1:1") == 2
    assert emulator.submits_for("p", 4, "16:9") == 1
    assert emulator.submits_for("p") == 3
    assert emulator.submits_for("q") == 0


# -- result files --------------------------------------------------------------------------


async def fetch_file(emulator: Emulator, session: aiohttp.ClientSession, body: dict[str, Any] | None = None) -> Any:
    rid = await submit(emulator, session, body)
    return await session.get(emulator.file_url(rid), allow_redirects=False)


async def test_files_need_no_auth_and_are_deterministic(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    async with await fetch_file(emulator, session, {"prompt": "p", "seed": 1, "aspect_ratio": "9:16"}) as resp:
        assert (resp.status, resp.content_type) == (200, "image/png")
        data = await resp.read()
    assert data == render_png("p", 1, "9:16")
    assert render_png("p", 2, "9:16") != data
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (144, 256)


def test_preview_sizes_keep_the_true_proportions() -> None:
    for ratio in RATIO_VALUES:
        width, height = image_size(ratio)
        full_width, full_height = RENDER_SIZES[ratio]
        assert max(width, height) == 256
        assert width / height == pytest.approx(full_width / full_height, rel=0.02)
        assert image_size(ratio, full_size=True) == (full_width, full_height)
        assert 3_500_000 < full_width * full_height < 4_400_000


async def test_full_size_images(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    emulator.config.full_size = True
    async with await fetch_file(emulator, session, {"prompt": "big", "aspect_ratio": "16:9"}) as resp:
        data = await resp.read()
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (2560, 1440)
    assert len(data) > 1_000_000  # weighs like a real render


@pytest.mark.parametrize(
    ("kind", "content_type"), [("html", "text/html"), ("empty", "image/png"), ("truncated", "image/png")]
)
async def test_hostile_result_kinds(
    emulator: Emulator, session: aiohttp.ClientSession, kind: str, content_type: str
) -> None:
    emulator.config.result_kind = kind  # type: ignore[assignment]  # Literal from a parametrized str
    async with await fetch_file(emulator, session) as resp:
        assert (resp.status, resp.content_type) == (200, content_type)
        data = await resp.read()
    full = render_png("a paper boat", 3, "1:1")
    if kind == "empty":
        assert data == b""
    elif kind == "truncated":
        assert data == full[: len(full) // 2]
    else:
        assert b"<html>" in data


@pytest.mark.parametrize("with_length", [True, False])
async def test_huge_result_streams(emulator: Emulator, session: aiohttp.ClientSession, with_length: bool) -> None:
    emulator.config.result_kind = "huge"
    emulator.config.huge_bytes = 300_000
    emulator.config.huge_content_length = with_length
    async with await fetch_file(emulator, session) as resp:
        assert (resp.content_length == 300_000) is with_length
        data = await resp.read()
    assert len(data) == 300_000
    assert data.startswith(b"\x89PNG")


async def test_redirect_result(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    emulator.config.result_kind = "redirect"
    emulator.config.redirect_url = "https://elsewhere.example/x.png"
    async with await fetch_file(emulator, session) as resp:
        assert (resp.status, resp.headers["Location"]) == (302, "https://elsewhere.example/x.png")


async def test_unfinished_jobs_have_no_file(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    emulator.config.queue_time = Duration.constant(5)
    async with await fetch_file(emulator, session) as resp:
        assert resp.status == 404
