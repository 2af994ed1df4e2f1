"""The emulator speaks every registered model: its fields, its refusals, its galleries, its input images."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot.emulator import Emulator
from bot.model_registry import build_request, vetted_models
from tests.bot.test_emulator import call

EDIT = "google/nano-banana-2/edit"


async def result_of(emu: Emulator, session: aiohttp.ClientSession, request_id: str) -> dict[str, Any]:
    for _ in range(100):
        _, body, _ = await call(session, "GET", f"{emu.url}/v1/requests/{request_id}/result")
        if body["status"] not in ("in_queue", "in_progress"):
            return dict(body)
        await asyncio.sleep(0.01)
    raise AssertionError("the job never finished")


@pytest.fixture
async def picture_host() -> Any:
    """A stand-in for Discord's CDN: one live picture and one dead link."""

    async def picture(request: web.Request) -> web.Response:
        return web.Response(body=b"\x89PNG...", content_type="image/png")

    app = web.Application()
    app.router.add_get("/live.png", picture)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()


@pytest.mark.parametrize("model", vetted_models(), ids=lambda model: model.id)
async def test_every_vetted_models_request_is_accepted_and_makes_its_images(
    emulator: Emulator, session: aiohttp.ClientSession, picture_host: str, model: Any
) -> None:
    count = model.max_count
    body = build_request(
        model, prompt="a paper boat", ratio="16:9", seed=5, count=count, image_url=f"{picture_host}/live.png"
    )
    status, answer, _ = await call(session, "POST", f"{emulator.url}/v1/models/{model.id}", json_body=body)
    assert status == 200, answer
    result = await result_of(emulator, session, answer["request_id"])
    assert result["status"] == "succeeded"
    assert len(result["output"]["images"]) == count
    for url in result["output"]["images"]:
        async with session.get(url) as response:
            assert response.status == 200
    _, info, _ = await call(session, "GET", f"{emulator.url}/v1/models/{model.id}")
    assert info["base_price_usd"] == (
        emulator.config.base_price_usd if model.id == vetted_models()[0].id else model.price_usd
    )
    assert set(info["input_schema"]["properties"]) == model.inputs.field_names


async def test_an_unknown_field_is_refused_naming_it(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    body = {"prompt": "x", "seed": 3, "num_images": 2}
    status, answer, _ = await call(
        session, "POST", f"{emulator.url}/v1/models/{emulator.config.model_id}", json_body=body
    )
    assert status == 422
    assert answer["detail"][0]["loc"] == ["body", "num_images"]
    assert answer["detail"][0]["type"] == "extra_forbidden"


async def test_an_edit_needs_its_image_and_the_right_shape(emulator: Emulator, session: aiohttp.ClientSession) -> None:
    url = f"{emulator.url}/v1/models/{EDIT}"
    status, answer, _ = await call(session, "POST", url, json_body={"prompt": "x"})
    assert (status, answer["detail"][0]["loc"]) == (422, ["body", "image_urls"])
    status, answer, _ = await call(session, "POST", url, json_body={"prompt": "x", "image_urls": "https://a/b.png"})
    assert (status, answer["detail"][0]["loc"]) == (422, ["body", "image_urls"])
    status, answer, _ = await call(
        session, "POST", url, json_body={"prompt": "x", "image_urls": ["https://a/b.png"], "num_images": 9}
    )
    assert (status, answer["detail"][0]["loc"]) == (422, ["body", "num_images"])
    status, answer, _ = await call(session, "POST", f"{emulator.url}/v1/models/no/such-model", json_body={})
    assert (status, answer["error_code"]) == (400, 400001)


async def test_an_edit_whose_image_link_is_dead_fails_upstream(
    emulator: Emulator, session: aiohttp.ClientSession, picture_host: str
) -> None:
    body = {"prompt": "x", "image_urls": [f"{picture_host}/expired.png"]}
    status, answer, _ = await call(session, "POST", f"{emulator.url}/v1/models/{EDIT}", json_body=body)
    assert status == 200  # accepted, then failed: the link is only fetched once the job exists
    result = await result_of(emulator, session, answer["request_id"])
    assert result["status"] == "failed"
    assert "input image" in result["error"]["error_message"]
    assert emulator.inputs.fetched == [(f"{picture_host}/expired.png", 404)]
