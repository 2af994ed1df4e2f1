"""`python -m bot check` against the fake Discord and the emulator: every ✓, and each ✗ with what to do."""

from __future__ import annotations

import io
import re
import socket
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.app import INVITE_PERMISSIONS
from bot.doctor import run_checks
from bot.emulator import Emulator
from bot.model_registry import vetted_models
from bot.settings import Settings
from storage.migrate import latest_version
from storage.models import JobOrigin, JobState, NewJob
from storage.postgres.jobs import PostgresJobStore
from storage.postgres.migrate import bundled_migrations as pg_migrations
from storage.postgres.registry import ProcessRegistry
from storage.sqlite import SQLiteJobStore
from tests.bot.conftest import TOKEN
from tests.bot_settings import bot_settings
from tests.fakediscord import FakeChannel, FakeDiscord, FakeGuild, Perm
from tests.storage.test_migrations import VERSION_1_SCHEMA, make_file, read_pragma


@pytest.fixture
def settings(tmp_path: Path, emulator: Emulator, fake_discord: FakeDiscord, guild: FakeGuild) -> Settings:
    return bot_settings(
        fake_discord, emulator, token=TOKEN, database_path=tmp_path / "data" / "imagine.sqlite3", guild_ids=[guild.id]
    )


async def check(settings: Settings, fake: FakeDiscord, **overrides: Any) -> tuple[int, list[str]]:
    out = io.StringIO()
    changed = Settings(_env_file=None, **(settings.model_dump() | overrides))
    code = await run_checks(changed, out, ready_timeout=0.05)
    text = out.getvalue()
    for secret in (fake.bot_token, TOKEN, fake.bot_token.split(".")[-1]):
        assert secret not in text
    return code, text.splitlines()


def line(lines: list[str], start: str) -> str:
    found = [text for text in lines if text.startswith(start)]
    assert found, f"no line starts with {start!r}:\n" + "\n".join(lines)
    return found[0]


def fix_after(lines: list[str], start: str) -> str:
    """The "→ what to do" line under the ✗ line that starts with `start`."""
    index = lines.index(line(lines, start))
    assert lines[index + 1].lstrip().startswith("→ ")
    return lines[index + 1]


def test_invite_permissions_are_exactly_what_the_bot_uses() -> None:
    assert INVITE_PERMISSIONS.value == 117824


async def test_every_check_passes_on_a_working_setup(
    settings: Settings, fake_discord: FakeDiscord, emulator: Emulator, guild: FakeGuild
) -> None:
    code, lines = await check(settings, fake_discord)
    assert code == 0, "\n".join(lines)
    assert not [text for text in lines if text.startswith("✗")]
    app_id = fake_discord.application_id
    assert str(app_id) in line(lines, "✓ Discord token: logged in as ImagineBot")
    assert "synced to the 1 server(s)" in line(lines, "✓ Slash commands")
    assert "in 1 server(s)" in line(lines, "✓ Gateway")
    assert "every permission the bot needs, in 1 channel(s)" in line(lines, f"✓ Test Server (id {guild.id})")
    runcomfy = line(lines, "✓ RunComfy token")
    assert emulator.config.model_id in runcomfy
    assert f"${emulator.config.base_price_usd:g} per image" in runcomfy
    assert "not created yet; `python -m bot run` creates it" in line(lines, "✓ Database")
    assert "public; spending is capped (200 images a day, $10 a day, $100 a month" in line(
        lines, "✓ Discord application"
    )
    invite = line(lines, "✓ Invite URL")
    assert "scopes bot applications.commands; permissions=117824" in invite
    assert invite.endswith(
        f"https://discord.com/oauth2/authorize?client_id={app_id}&scope=bot+applications.commands&permissions=117824"
    )
    assert lines[-1].strip().startswith("All ")
    assert not settings.database_path.exists()  # the doctor looks; only `run` creates and migrates


async def test_a_rejected_discord_token_fails_and_says_where_to_reset_it(
    settings: Settings, fake_discord: FakeDiscord
) -> None:
    wrong = "MTIzNDU2Nzg5.WRONG-token-abcdefghijklmnop"
    code, lines = await check(settings, fake_discord, discord_token=wrong)
    assert code == 1
    assert "rejected DISCORD_TOKEN" in line(lines, "✗ Discord token")
    assert "Reset Token" in fix_after(lines, "✗ Discord token")
    assert not any(wrong in text or "WRONG-token" in text for text in lines)
    # The other checks still run, so one run tells everything that is wrong.
    line(lines, "✓ RunComfy token")
    line(lines, "✓ Database")
    line(lines, "✗ Invite URL")


async def test_a_missing_channel_permission_is_named_with_its_channel(
    settings: Settings, fake_discord: FakeDiscord, guild: FakeGuild, general: FakeChannel
) -> None:
    general.set_overwrite(guild.bot_role, deny=Perm.ATTACH_FILES | Perm.ADD_REACTIONS)
    hidden = guild.add_channel("mods-only")
    hidden.set_overwrite(guild.everyone, deny=Perm.VIEW_CHANNEL)
    code, lines = await check(settings, fake_discord)
    assert code == 1
    problem = line(lines, "✗ Test Server")
    assert "Attach Files in #general" in problem
    assert "Add Reactions in #general" in problem
    assert "mods-only" not in problem  # hidden from the bot on purpose: not a failure
    assert "re-invite" in fix_after(lines, "✗ Test Server")
    assert "1 of " in lines[-1]


async def test_a_role_without_a_permission_is_reported_server_wide(
    settings: Settings, fake_discord: FakeDiscord, guild: FakeGuild
) -> None:
    guild.everyone.permissions &= ~int(Perm.EMBED_LINKS)
    guild.bot_role.permissions &= ~int(Perm.EMBED_LINKS)
    code, lines = await check(settings, fake_discord)
    assert code == 1
    assert "server-wide: Embed Links" in line(lines, "✗ Test Server")


async def test_a_rejected_runcomfy_token_and_an_unknown_model_fail(
    settings: Settings, fake_discord: FakeDiscord
) -> None:
    code, lines = await check(settings, fake_discord, runcomfy_api_token="rc-not-the-right-one-123")
    assert code == 1
    assert "rejected RUNCOMFY_API_TOKEN" in line(lines, "✗ RunComfy token")
    assert not any("rc-not-the-right-one-123" in text for text in lines)

    code, lines = await check(settings, fake_discord, runcomfy_model="someone/else/text-to-image")
    assert code == 1
    assert "does not know someone/else/text-to-image" in line(lines, "✗ RunComfy model")
    assert "RUNCOMFY_MODEL" in fix_after(lines, "✗ RunComfy model")


async def test_missing_tokens_and_an_unusable_database_each_get_a_line(
    settings: Settings, fake_discord: FakeDiscord, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    code, lines = await check(
        settings,
        fake_discord,
        discord_token=None,
        runcomfy_api_token=None,
        database_path=tmp_path / "a-file" / "imagine.sqlite3",
    )
    assert code == 1
    assert "DISCORD_TOKEN is not set" in line(lines, "✗ Discord token")
    assert "RUNCOMFY_API_TOKEN is not set" in line(lines, "✗ RunComfy token")
    assert "cannot open it" in line(lines, "✗ Database")
    assert "/data volume" in fix_after(lines, "✗ Database")


async def test_unregistered_commands_are_reported(settings: Settings, fake_discord: FakeDiscord) -> None:
    code, lines = await check(settings, fake_discord, discord_guild_ids=[])
    assert code == 1
    assert "/imagine is not registered" in line(lines, "✗ Slash commands")
    assert "python -m bot sync --global" in fix_after(lines, "✗ Slash commands")


async def test_a_bot_in_no_server_is_told_to_use_the_invite(tmp_path: Path, emulator: Emulator) -> None:
    async with FakeDiscord() as fake:
        settings = Settings(
            _env_file=None,
            discord_token=fake.bot_token,
            runcomfy_api_token=TOKEN,
            runcomfy_base_url=emulator.url,
            database_path=tmp_path / "imagine.sqlite3",
            discord_api_base_url=fake.rest_base,
            discord_gateway_url=fake.gateway_url,
        )
        code, lines = await check(settings, fake)
    assert code == 1
    assert "invite URL" in fix_after(lines, "✗ Servers: the bot is in no server")


# -- the database, read-only ---------------------------------------------------------------------------


async def made_by_run(settings: Settings) -> None:
    """The database as `python -m bot run` leaves it: created and migrated."""
    store = await SQLiteJobStore.open(settings.database_path)
    await store.close()


async def test_a_current_database_is_read_without_taking_the_write_lock(
    settings: Settings, fake_discord: FakeDiscord
) -> None:
    await made_by_run(settings)
    with sqlite3.connect(settings.database_path, isolation_level=None) as writer:
        writer.execute("BEGIN IMMEDIATE")  # the running bot in the middle of a write
        try:
            code, lines = await check(settings, fake_discord)
        finally:
            writer.execute("ROLLBACK")
    writer.close()
    assert code == 0, "\n".join(lines)
    assert f"writable, schema version {latest_version()}, 0 unfinished job(s)" in line(lines, "✓ Database")


async def test_an_older_database_is_not_migrated_and_will_be_on_the_next_run(
    settings: Settings, fake_discord: FakeDiscord
) -> None:
    settings.database_path.parent.mkdir(parents=True)
    make_file(settings.database_path, VERSION_1_SCHEMA)
    before = settings.database_path.read_bytes()
    code, lines = await check(settings, fake_discord)
    assert code == 0, "\n".join(lines)
    assert (
        f"writable, schema version 1; `python -m bot run` migrates it to {latest_version()} on its next start"
        in line(lines, "✓ Database")
    )
    assert read_pragma(settings.database_path, "user_version") == 1
    assert settings.database_path.read_bytes() == before


async def test_a_newer_database_is_refused_naming_both_versions(settings: Settings, fake_discord: FakeDiscord) -> None:
    settings.database_path.parent.mkdir(parents=True)
    make_file(settings.database_path, "CREATE TABLE from_the_future (x); PRAGMA user_version = 99;")
    code, lines = await check(settings, fake_discord)
    assert code == 1
    assert (
        f"✗ Database {settings.database_path}: schema version 99 was written by a newer release of the bot; "
        f"this one knows versions up to {latest_version()} and will not touch it"
    ) in lines
    assert "run the release that wrote it" in fix_after(lines, "✗ Database")
    assert read_pragma(settings.database_path, "user_version") == 99


async def test_jobs_left_by_the_cli_are_listed_apart_from_the_bots(
    settings: Settings, fake_discord: FakeDiscord
) -> None:
    await made_by_run(settings)
    now = datetime.now(UTC)
    store = await SQLiteJobStore.open(settings.database_path)
    try:
        cli = await store.create(NewJob("m", "from the terminal", "1:1", 1, JobOrigin()), now=now)
        await store.transition(cli.id, JobState.IN_QUEUE, expect=tuple(JobState), now=now, request_id="req-cli-1")
        await store.create(NewJob("m", "never sent", "1:1", 2, JobOrigin()), now=now)
        await store.create(NewJob("m", "a member's", "1:1", 3, JobOrigin(guild_id=1, channel_id=2, user_id=3)), now=now)
    finally:
        await store.close()
    code, lines = await check(settings, fake_discord)
    assert code == 0, "\n".join(lines)
    assert ", 1 unfinished job(s)," in line(lines, "✓ Database")
    index = lines.index(line(lines, "✓ Database"))
    assert lines[index + 1] == (
        "    2 job(s) left by the CLI (`python -m bot generate` stopped before they ended; the bot does not resume "
        "them): req-cli-1 in_queue, (never sent) submitting"
    )


# -- a public application --------------------------------------------------------------------------------


async def test_a_public_bot_without_allow_list_or_budget_is_a_failure(
    settings: Settings, fake_discord: FakeDiscord
) -> None:
    no_caps = {"budget_images_per_day": 0, "budget_usd_per_day": 0, "budget_usd_per_month": 0}
    code, lines = await check(settings, fake_discord, **no_caps)
    assert code == 1
    assert line(lines, "✗ Discord application") == (
        "✗ Discord application: public (anyone can add the bot to their server) and neither "
        "DISCORD_ALLOWED_GUILD_IDS nor a BUDGET_* cap is set, so any server can spend your RunComfy credit"
    )
    assert "Public Bot" in fix_after(lines, "✗ Discord application")

    code, lines = await check(settings, fake_discord, discord_allowed_guild_ids=[123456789012345678], **no_caps)
    assert "public; the bot serves only the 1 server(s) in DISCORD_ALLOWED_GUILD_IDS" in line(
        lines, "✓ Discord application"
    )

    fake_discord.bot_public = False
    code, lines = await check(settings, fake_discord, **no_caps)
    assert code == 0, "\n".join(lines)
    assert line(lines, "✓ Discord application") == (
        "✓ Discord application: private (only its owner can add the bot to a server)"
    )


# -- no network ------------------------------------------------------------------------------------------


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on: what an unreachable host looks like, without leaving the machine."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_unreachable_hosts_are_named_without_blaming_the_tokens(
    settings: Settings, fake_discord: FakeDiscord
) -> None:
    port = closed_port()
    code, lines = await check(
        settings,
        fake_discord,
        discord_api_base_url=f"http://127.0.0.1:{port}/api/v10",
        runcomfy_base_url=f"http://127.0.0.1:{port}",
    )
    assert code == 1
    assert line(lines, "✗ Discord") == (
        f"✗ Discord: could not reach http://127.0.0.1:{port}: 127.0.0.1 refused the connection on port {port}; "
        "the token was not checked"
    )
    assert "network connection, DNS and firewall" in fix_after(lines, "✗ Discord")
    assert line(lines, "✗ RunComfy") == (
        f"✗ RunComfy: could not reach http://127.0.0.1:{port}: 127.0.0.1 refused the connection on port {port}; "
        "the token was not checked"
    )
    assert "RUNCOMFY_BASE_URL" in fix_after(lines, "✗ RunComfy")
    assert fix_after(lines, "✗ Invite URL").strip() == "→ fix the Discord line above first"
    text = "\n".join(lines)
    assert "Reset Token" not in text
    assert "rejected" not in text
    assert not re.search(r"_NotSent|[A-Z][a-z]+(Error|Exception)\b", text), text


# -- PostgreSQL (DATABASE_URL) ---------------------------------------------------------


@pytest.mark.postgres
async def test_a_shared_database_line_names_its_processes_and_a_shard_clash(
    settings: Settings, fake_discord: FakeDiscord, postgres_url: str
) -> None:
    url = postgres_url.replace("postgres@", "postgres:pg-secret-9@", 1)  # trust auth ignores the password
    code, lines = await check(settings, fake_discord, database_url=url)
    assert code == 0, "\n".join(lines)
    database = line(lines, "✓ Database postgresql://postgres:***@")
    assert f"schema version {len(pg_migrations())}, 0 unfinished job(s); no bot process is running on it" in database
    assert not any("pg-secret-9" in text for text in lines)

    async with await PostgresJobStore.open(postgres_url) as store:
        registry = ProcessRegistry(store.pool)
        await registry.register("bot-a", host="box-1", pid=7, shard_count=1, shard_ids=(0,), now=datetime.now(UTC))
        code, lines = await check(settings, fake_discord, database_url=url)
        assert code == 0
        assert "1 bot process(es) running: bot-a on box-1 (shards 0 of 1)" in line(lines, "✓ Database")
        assert "would be refused: shard 0 is already run by process bot-a on host box-1" in "\n".join(lines)
        await registry.deregister("bot-a")
        code, lines = await check(settings, fake_discord, database_url=url)
        assert "would be refused" not in "\n".join(lines)


@pytest.mark.postgres
async def test_an_unreachable_shared_database_fails_with_what_to_check(
    settings: Settings, fake_discord: FakeDiscord
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql://bot:hunter2-secret@127.0.0.1:{port}/imagine"
    code, lines = await check(settings, fake_discord, database_url=url)
    assert code == 1
    assert line(lines, "✗ Database postgresql://bot:***@127.0.0.1").count("cannot connect") == 1
    assert "DATABASE_URL" in fix_after(lines, "✗ Database")
    assert not any("hunter2" in text for text in lines)


async def test_check_compares_each_models_description_with_runcomfys_schema(
    fake_discord: FakeDiscord, settings: Settings, emulator: Emulator, tmp_path: Path
) -> None:
    code, lines = await check(settings, fake_discord)
    assert code == 0, lines
    for model in vetted_models():
        assert any(text.startswith(f"✓ Model {model.name} ({model.id}): matches") for text in lines), lines
    # An operator's description that no longer matches what RunComfy serves: every difference is named.
    drifted = tmp_path / "models.toml"
    drifted.write_text(
        '[[model]]\nid = "google/nano-banana-2/edit"\nname = "Nano Banana 2 Edit"\nkind = "image-edit"\n'
        'price_usd = 0.05\n[model.inputs]\nimage = { field = "image_url" }\nseed = { field = "seed" }\n'
        '\n[[model]]\nid = "acme/gone/text-to-image"\nname = "Gone"\nkind = "text-to-image"\nprice_usd = 0.01\n'
    )
    code, lines = await check(settings, fake_discord, runcomfy_models_file=drifted)
    assert code == 1
    drift = line(lines, "✗ Model Nano Banana 2 Edit")
    assert "`image_url` is not an input of the model" in drift
    assert "`seed` is not an input of the model" in drift
    assert "`image_urls` is required upstream but not described" in drift
    assert "the base price is $0.07 upstream, $0.05 here" in drift
    assert "RunComfy does not know this model" in line(lines, "✗ Model Gone")
    assert "RUNCOMFY_MODELS_FILE" in fix_after(lines, "✗ Model Gone")
