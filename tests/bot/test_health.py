"""The health endpoint and /metrics of a running bot, against the fake Discord and the emulator."""

from __future__ import annotations

import io
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.app import ImagineBot, build_bot
from bot.emulator import Emulator
from bot.health import EndpointUnavailableError, HealthServer, probe, probe_url
from bot.metrics import BotMetrics, error_kind
from bot.runcomfy import AuthError, RunComfyError, SubmitOutcomeUnknownError, TransientError
from bot.settings import Settings
from storage.migrate import latest_version
from storage.models import JobState
from tests.bot.conftest import TOKEN
from tests.bot_settings import QUICK_POLLING, bot_settings
from tests.fakediscord import FakeChannel, FakeDiscord, FakeGuild, FakeMember
from tests.fakediscord.runner import run_bot


@pytest.fixture
def settings(tmp_path: Path, emulator: Emulator, fake_discord: FakeDiscord, guild: FakeGuild) -> Settings:
    return bot_settings(
        fake_discord,
        emulator,
        token=TOKEN,
        database_path=tmp_path / "imagine.sqlite3",
        guild_ids=[guild.id],
        health_port=0,  # any free port; the bot reports the one it got
        **QUICK_POLLING,
    )


@pytest.fixture
async def bot(fake_discord: FakeDiscord, settings: Settings) -> AsyncIterator[ImagineBot]:
    async with run_bot(fake_discord, build_bot(settings, guild_ready_timeout=0.05)) as running:
        yield running


def base_url(bot: ImagineBot) -> str:
    assert bot.health is not None
    assert bot.health.port
    return f"http://127.0.0.1:{bot.health.port}"


async def get(bot: ImagineBot, path: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(base_url(bot) + path) as response:
        return response.status, response.headers["Content-Type"], await response.text()


async def healthz(bot: ImagineBot) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(base_url(bot) + "/healthz") as response:
        return response.status, await response.json()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} from Prometheus text."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def imagine(fake: FakeDiscord, member: FakeMember, channel: FakeChannel, prompt: str) -> None:
    interaction = await member.run_command("imagine", channel, prompt=prompt, seed=5)

    def done() -> bool:
        message = interaction.original_message
        return message is not None and "Done" in message.content

    await fake.wait_for(done, 10)


async def test_healthz_is_ok_when_gateway_database_and_scheduler_are(bot: ImagineBot) -> None:
    status, body = await healthz(bot)
    assert status == 200
    assert body["status"] == "ok"
    assert body["checks"]["gateway"]["ok"] is True
    assert body["checks"]["database"] == {"ok": True, "schema_version": latest_version()}
    assert body["checks"]["scheduler"] == {"ok": True, "pending": 0}
    code, _content_type, _ = await get(bot, "/nothing-here")
    assert code == 404


async def test_healthz_names_what_is_down(bot: ImagineBot, fake_discord: FakeDiscord) -> None:
    async with fake_discord.gateway_outage():
        status, body = await healthz(bot)
        assert status == 503
        assert body["status"] == "failing"
        assert body["checks"]["gateway"]["ok"] is False
        assert body["checks"]["database"]["ok"] is True
    await fake_discord.wait_for(bot.gateway_connected, 10)
    assert (await healthz(bot))[0] == 200

    assert bot.jobs is not None
    await bot.jobs.stop()
    status, body = await healthz(bot)
    assert status == 503
    assert body["checks"]["scheduler"]["ok"] is False


async def test_metrics_count_a_job_from_command_to_delivery(
    bot: ImagineBot, fake_discord: FakeDiscord, alice: FakeMember, general: FakeChannel
) -> None:
    fake_discord.inject_fault("POST /interactions/{interaction_id}/{interaction_token}/callback", 429)
    await imagine(fake_discord, alice, general, "a lighthouse at dusk")
    status, content_type, text = await get(bot, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=")
    found = samples(text)
    assert found[("imagine_jobs", (("state", "in_queue"),))] == 0  # live jobs only: this one has ended
    assert found[("imagine_jobs", (("state", "delivering"),))] == 0
    assert found[("imagine_jobs_finished_total", (("outcome", "delivered"),))] == 1
    assert found[("imagine_runcomfy_calls_total", (("operation", "submit"),))] == 1
    polls = sum(found.get(("imagine_runcomfy_calls_total", (("operation", op),)), 0) for op in ("status", "result"))
    assert polls >= 1
    assert found[("imagine_runcomfy_calls_total", (("operation", "download"),))] == 1
    assert found[("imagine_runcomfy_http_requests_total", ())] >= 3
    assert found[("imagine_end_to_end_seconds_count", ())] == 1
    assert 0 < found[("imagine_end_to_end_seconds_sum", ())] < 10
    assert found[("imagine_detection_delay_seconds_count", ())] == 1
    assert found[("imagine_discord_rate_limited_total", (("scope", "user"),))] == 1
    assert found[("imagine_discord_http_errors_total", (("status", "429"),))] == 1
    assert found[("imagine_gateway_connected", ())] == 1
    assert ("imagine_event_loop_lag_seconds_count", ()) in found
    for secret in (fake_discord.bot_token, TOKEN):
        assert secret not in text
    assert bot.store is not None
    assert (await bot.store.count_by_state())[JobState.DELIVERED] == 1


async def test_the_health_command_asks_the_running_bot(bot: ImagineBot, settings: Settings) -> None:
    assert bot.health is not None
    pointed = settings.model_copy(update={"health_port": bot.health.port})
    out = io.StringIO()
    assert await probe(pointed, out) == 0
    assert out.getvalue().startswith("healthy")

    assert bot.jobs is not None
    await bot.jobs.stop()
    out = io.StringIO()
    assert await probe(pointed, out) == 1
    assert out.getvalue() == "unhealthy: failing: scheduler\n"


async def test_the_health_command_fails_when_nothing_answers(unused_tcp_port: int) -> None:
    settings = Settings(_env_file=None, health_port=unused_tcp_port, health_host="0.0.0.0")  # noqa: S104
    assert probe_url(settings) == f"http://127.0.0.1:{unused_tcp_port}/healthz"
    out = io.StringIO()
    assert await probe(settings, out) == 1
    assert out.getvalue().startswith("unhealthy: no answer from")


def test_error_kinds_are_a_small_vocabulary() -> None:
    assert error_kind(TransientError("x", status=429)) == "rate_limited"
    assert error_kind(TransientError("x", status=503)) == "server_error"
    assert error_kind(TransientError("timed out")) == "timeout_or_connection"
    assert error_kind(AuthError("x")) == "auth"
    assert error_kind(SubmitOutcomeUnknownError("x")) == "submit_outcome_unknown"
    assert error_kind(RunComfyError("x")) == "run_comfy"


def test_every_live_job_state_is_exported_even_at_zero() -> None:
    metrics = BotMetrics()
    text = samples(
        __import__("prometheus_client").generate_latest(metrics.registry).decode()  # the library's own renderer
    )
    live = {(("state", state.value),) for state in JobState if not state.is_final}
    assert {labels for name, labels in text if name == "imagine_jobs"} == live


async def test_a_port_in_use_is_a_clear_error(bot: ImagineBot) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        second = HealthServer(bot, "127.0.0.1", port)
        with pytest.raises(EndpointUnavailableError, match=f"HEALTH_PORT: cannot listen on 127.0.0.1:{port}"):
            await second.start()
        await second.close()
