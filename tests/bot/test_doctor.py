"""`python -m bot check` against the fake Discord and the emulator: every ✓, and each ✗ with what to do."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from bot.app import INVITE_PERMISSIONS
from bot.doctor import run_checks
from bot.emulator import Emulator
from bot.settings import Settings
from storage.migrate import latest_version
from tests.bot.conftest import TOKEN
from tests.bot_settings import bot_settings
from tests.fakediscord import FakeChannel, FakeDiscord, FakeGuild, Perm


@pytest.fixture
def settings(tmp_path: Path, emulator: Emulator, fake_discord: FakeDiscord, guild: FakeGuild) -> Settings:
    return bot_settings(
        fake_discord, emulator, token=TOKEN, database_path=tmp_path / "data" / "imagine.sqlite3", guild_ids=[guild.id]
    )


async def check(settings: Settings, fake: FakeDiscord, **overrides: Any) -> tuple[int, list[str]]:
    out = io.StringIO()
    changed = Settings(_env_file=None, **(settings.model_dump() | overrides))  # type: ignore[call-arg]
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
    assert f"writable, schema version {latest_version()}, 0 unfinished job(s)" in line(lines, "✓ Database")
    invite = line(lines, "✓ Invite URL")
    assert "scopes bot applications.commands; permissions=117824" in invite
    assert invite.endswith(
        f"https://discord.com/oauth2/authorize?client_id={app_id}&scope=bot+applications.commands&permissions=117824"
    )
    assert lines[-1].strip().startswith("All ")
    assert (settings.database_path).exists()


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
            _env_file=None,  # type: ignore[call-arg]
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
