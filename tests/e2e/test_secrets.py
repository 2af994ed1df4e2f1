"""No secret leaves the bot: not in a log line, an exception, a repr, or anything sent to Discord.

The secrets are the Discord bot token, the RunComfy API key and every
interaction token (a 15-minute key to a member's reply). Each is a
recognisable string, and each test looks for it, whole, everywhere the bot
writes: the in-process bot's own log records and exceptions at DEBUG, every
request body the fake Discord received, every version of every message, the
repr of settings, jobs and clients; and the complete stderr/stdout of the real
`python -m bot` process (run, generate, sync, check and its error paths) at
DEBUG, where discord.py itself logs request URLs that carry interaction tokens.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr

from bot.emulator import Duration, Emulator, Fault
from bot.runcomfy import RunComfyClient, RunComfyError
from bot.settings import Settings
from storage.models import JobOrigin, NewJob
from storage.sqlite import SQLiteJobStore
from tests.chaos.bot_process import BotProcess, bot_environment
from tests.chaos.fakes import RUNCOMFY_TOKEN, world
from tests.chaos.plan import ChaosPlan
from tests.e2e.conftest import RUNCOMFY_TOKEN as E2E_RUNCOMFY_TOKEN
from tests.e2e.conftest import BotStarter, reply_showing
from tests.fakediscord import FakeChannel, FakeDiscord, FakeMember
from tests.fakediscord.ratelimit import MESSAGE_EDIT

OUR_LOGGERS = ("bot", "cogs", "storage")


def leaks(text: str, secrets: Iterable[str]) -> list[str]:
    """The secrets found in `text` (their first 12 characters, so a failure does not print them whole)."""
    return [secret[:12] + "…" for secret in secrets if secret and secret in text]


def sent_to_discord(fake: FakeDiscord) -> str:
    """Every request body and every version of every message, as one text."""
    bodies = "\n".join(request.body.decode(errors="replace") for request in fake.requests)
    messages = "\n".join(
        f"{version.content} {version.embeds} {version.components} {[a.filename for a in version.attachments]}"
        for message in fake.messages.values()
        for version in message.versions
    )
    return bodies + "\n" + messages


async def test_the_bot_in_process_leaks_no_token_in_logs_errors_reprs_or_messages(
    fake_discord: FakeDiscord,
    start_bot: BotStarter,
    emulator: Emulator,
    settings: Settings,
    alice: FakeMember,
    general: FakeChannel,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    emulator.config.queue_time = Duration.constant(0.3)
    async with start_bot() as bot:
        # A delivered job, through the interaction token.
        happy = await alice.run_command("imagine", general, prompt="a lighthouse")
        await reply_showing(fake_discord, happy, "Done")
        # A job whose token dies early: edits move to the channel route, one of them meets a 500.
        moved = await alice.run_command("imagine", general, prompt="a moved reply")
        await reply_showing(fake_discord, moved, "Queued")
        fake_discord.expire_token_early(moved)
        fake_discord.inject_fault(MESSAGE_EDIT, 500)
        await reply_showing(fake_discord, moved, "Done", within=20)
        # RunComfy echoes the key back in an error body: the member and the log must get it redacted.
        emulator.inject("submit", Fault.http(400, {"error_message": f"bad header Bearer {E2E_RUNCOMFY_TOKEN}"}))
        echoed = await alice.run_command("imagine", general, prompt="an echo")
        await reply_showing(fake_discord, echoed, "Failed")
        # RunComfy refuses the key on a poll: the job fails with the operator's sentence.
        emulator.inject("status", Fault.error_code(400004, message=f"token {E2E_RUNCOMFY_TOKEN} revoked"))
        refused = await alice.run_command("imagine", general, prompt="a refusal")
        await reply_showing(fake_discord, refused, "Failed")
        assert bot.store is not None
        jobs = await bot.store.jobs_for_user(alice.id)
        reprs = [repr(bot.settings), repr(bot.jobs.client if bot.jobs else None), *map(repr, jobs)]
        reprs += [repr(job.origin) for job in jobs]
    interaction_tokens = [i.token for i in (happy, moved, echoed, refused)]
    secrets = [fake_discord.bot_token, E2E_RUNCOMFY_TOKEN, *interaction_tokens]

    ours = [r for r in caplog.records if r.name.split(".")[0] in OUR_LOGGERS]
    assert ours, "the bot logged nothing at DEBUG: the test would prove nothing"
    for record in ours:
        assert not leaks(record.getMessage(), secrets), record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            assert not leaks(f"{error} {error!r} {record.exc_text or ''}", secrets), record.name
    assert not leaks(sent_to_discord(fake_discord), secrets)
    assert not leaks("\n".join(reprs), secrets)
    assert "Authorization" not in emulator.last_headers.get("file", {})  # the file host never sees the key


async def test_runcomfy_errors_and_the_client_never_carry_the_key(emulator: Emulator) -> None:
    secret = "rc-SECRET-errors-9e41"
    async with aiohttp.ClientSession() as session:
        client = RunComfyClient(
            session, base_url=emulator.url, model=emulator.config.model_id, token=SecretStr(secret), max_retries=0
        )
        emulator.inject("submit", Fault.http(422, {"detail": f"Authorization: Bearer {secret} is malformed"}))
        with pytest.raises(RunComfyError) as invalid:
            await client.submit({"prompt": "x"})
        with pytest.raises(RunComfyError) as rejected:
            await client.submit({"prompt": "x"})  # the emulator does not know this key
    for error in (invalid.value, rejected.value):
        assert not leaks(f"{error} {error!r} {error.user_message} {error.args}", [secret])
    assert not leaks(repr(client), [secret])
    settings = Settings(_env_file=None, runcomfy_api_token=secret, discord_token="discord-SECRET-5a1c")
    assert not leaks(f"{settings!r} {settings} {settings.model_dump()}", [secret, "discord-SECRET-5a1c"])


async def run_cli(workdir: Path, environment: dict[str, str], *args: str, within: float = 60) -> tuple[int | None, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, cwd=workdir, env=environment,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), within)
    return process.returncode, stdout.decode(errors="replace") + stderr.decode(errors="replace")


@pytest.mark.timeout(120)
async def test_the_bot_process_and_the_cli_at_debug_print_no_secret(tmp_path: Path) -> None:
    plan = ChaosPlan(channels=1, members=2)
    async with world(plan) as chaos:
        fake, emulator = chaos.fake, chaos.emulator
        environment = bot_environment(chaos, tmp_path, LOG_LEVEL="DEBUG", LOG_FORMAT="json")  # the CLI: text
        emulator.config.queue_time = Duration.constant(0.2)
        outputs: dict[str, str] = {}

        # The bot: a job delivered, a reply moved to the channel route, RunComfy echoing the key in an error.
        bot = BotProcess(tmp_path, environment, 0)
        await bot.start()
        try:
            await fake.wait_for(lambda: fake.gateway.identify_count > 0 and fake.gateway.connected, 30)
            member, channel = chaos.members[0], chaos.channels[0]
            happy = await member.run_command("imagine", channel, prompt="a quiet harbour")
            await reply_showing(fake, happy, "Done", within=20)
            moved = await member.run_command("imagine", channel, prompt="a moved reply")
            await reply_showing(fake, moved, "Queued", within=20)
            fake.expire_token_early(moved)
            await reply_showing(fake, moved, "Done", within=20)
            emulator.inject("submit", Fault.http(400, {"error_message": f"bad header Bearer {RUNCOMFY_TOKEN}"}))
            echoed = await member.run_command("imagine", channel, prompt="an echo")
            await reply_showing(fake, echoed, "Failed", within=20)
        finally:
            await bot.stop(signal.SIGTERM)
        outputs["run"] = bot.log_text()
        interaction_tokens = [happy.token, moved.token, echoed.token]

        # The CLI and its error paths, same secrets in the environment.
        cli_env = environment | {"DATABASE_PATH": str(tmp_path / "cli.sqlite3"), "LOG_FORMAT": "text"}
        _, outputs["generate"] = await run_cli(tmp_path, cli_env, "generate", "a red fox", "--output", "fox.png")
        wrong = cli_env | {"RUNCOMFY_API_TOKEN": "rc-SECRET-wrong-key-77aa"}
        code, outputs["generate, key rejected"] = await run_cli(tmp_path, wrong, "generate", "a red fox")
        assert code == 1
        _, outputs["sync"] = await run_cli(tmp_path, cli_env, "sync")
        _, outputs["check"] = await run_cli(tmp_path, cli_env, "check")
        rejected = cli_env | {"DISCORD_TOKEN": "discord-SECRET-rejected-token-0b3e"}
        code, outputs["run, Discord rejects the token"] = await run_cli(tmp_path, rejected, "run")
        assert code != 0
        bad_setting = cli_env | {"LOG_FORMAT": "xml"}
        code, outputs["run, a bad setting"] = await run_cli(tmp_path, bad_setting, "run")
        assert code == 2

    secrets = [
        fake.bot_token,
        RUNCOMFY_TOKEN,
        "rc-SECRET-wrong-key-77aa",
        "discord-SECRET-rejected-token-0b3e",
        *interaction_tokens,
    ]
    assert "DEBUG" in outputs["run"], "no DEBUG lines were written: the test would prove little"
    for command, output in outputs.items():
        assert not leaks(output, secrets), f"`python -m bot {command}` printed a secret"
    assert not leaks(sent_to_discord(fake), secrets)
    assert "webhooks" in outputs["run"], "discord.py's request lines (with token URLs) were not exercised"


async def test_the_store_never_shows_the_interaction_token_in_a_repr(tmp_path: Path) -> None:
    token = "aW50ZXJhY3Rpb24.SECRET-interaction-token-4411"
    async with await SQLiteJobStore.open(tmp_path / "jobs.sqlite3") as store:
        origin = JobOrigin(channel_id=1, interaction_token=token)
        job = await store.create(NewJob("m", "p", "1:1", 1, origin), now=datetime.now(UTC))
    assert job.origin.interaction_token == token
    assert not leaks(f"{job!r} {job.origin!r} {job}", [token])
