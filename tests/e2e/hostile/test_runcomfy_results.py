"""What RunComfy hands back, hostile: no image, huge or broken files, redirects and result URLs off the allowlist."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bot.emulator import Fault
from tests.chaos.verdict import FAILED
from tests.e2e.conftest import reply_showing
from tests.e2e.hostile.support import BILLED_NO_IMAGE, Case, Play, World

NOT_DOWNLOADED = "The finished image could not be downloaded."


def failed_result(setup: Callable[[World], None]) -> Callable[[World], Awaitable[None]]:
    async def case(w: World) -> None:
        setup(w)
        interaction = await w.alice.run_command("imagine", w.general, prompt="a perfectly normal cat")
        reply = await reply_showing(w.fake, interaction, FAILED, within=20)
        assert NOT_DOWNLOADED in str(reply.embeds)
        assert not reply.attachments
        assert [row.state for row in w.rows()] == ["failed"]

    return case


def set_config(**values: Any) -> Callable[[World], None]:
    def setup(w: World) -> None:
        for name, value in values.items():
            setattr(w.emulator.config, name, value)

    return setup


def redirect_to(target: str) -> Callable[[World], None]:
    return set_config(result_kind="redirect", redirect_url=target)


def result_answer_pointing_at(url: str) -> Callable[[World], None]:
    """RunComfy's /result itself names the file elsewhere (a compromised or spoofed answer)."""

    def setup(w: World) -> None:
        body = {"request_id": "spoofed", "status": "succeeded", "output": {"images": [url]}}
        w.emulator.inject("result", Fault.http(200, body))

    return setup


CASES: dict[str, Case] = {
    "result is HTML": Case(failed_result(set_config(result_kind="html")), BILLED_NO_IMAGE),
    "result is an empty file": Case(failed_result(set_config(result_kind="empty")), BILLED_NO_IMAGE),
    "result is a 200 MB stream": Case(
        failed_result(set_config(result_kind="huge", huge_bytes=200 * 1024 * 1024, huge_content_length=False)),
        BILLED_NO_IMAGE,
    ),
    "result declares 200 MB": Case(
        failed_result(set_config(result_kind="huge", huge_bytes=200 * 1024 * 1024)), BILLED_NO_IMAGE
    ),
    "result is a truncated PNG": Case(failed_result(set_config(result_kind="truncated")), BILLED_NO_IMAGE),
    "result is a decompression bomb": Case(failed_result(set_config(result_kind="bomb")), BILLED_NO_IMAGE),
    "result redirects to 127.0.0.1": Case(failed_result(lambda w: None), BILLED_NO_IMAGE, localhost_api=True),
    "result redirects to 10.0.0.1": Case(failed_result(redirect_to("http://10.0.0.1/x.png")), BILLED_NO_IMAGE),
    "result redirects to 169.254.169.254": Case(
        failed_result(redirect_to("http://169.254.169.254/latest/meta-data/")), BILLED_NO_IMAGE
    ),
    "result redirects to [::1]": Case(failed_result(redirect_to("http://[::1]:9/x.png")), BILLED_NO_IMAGE),
    "result redirects to a non-allowlisted host": Case(
        failed_result(redirect_to("https://cdn.evil.example/x.png")), BILLED_NO_IMAGE
    ),
    "result on a non-allowlisted host": Case(
        failed_result(result_answer_pointing_at("https://cdn.evil.example/x.png")), BILLED_NO_IMAGE
    ),
    "result on a private address": Case(
        failed_result(result_answer_pointing_at("http://192.168.1.1/x.png")), BILLED_NO_IMAGE
    ),
}


@pytest.mark.parametrize("name", list(CASES))
async def test_a_hostile_result_gets_its_answer_and_changes_nothing_else(play: Play, name: str) -> None:
    await play(CASES[name])
