"""`python -m bot sync`: commands are registered on purpose, not on every start."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.fakediscord import FakeDiscord, FakeGuild


async def run_sync(fake: FakeDiscord, tmp_path: Path, *args: str, guild_ids: str = "") -> tuple[int, str, str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("RUNCOMFY_", "DISCORD_"))}
    environment.update(
        {
            "DISCORD_TOKEN": fake.bot_token,
            "DISCORD_API_BASE_URL": fake.rest_base,
            "DISCORD_GATEWAY_URL": fake.gateway_url,
            "DISCORD_GUILD_IDS": guild_ids,
            "DATABASE_PATH": str(tmp_path / "imagine.sqlite3"),
        }
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "sync", *args, cwd=tmp_path, env=environment,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_global_sync_registers_the_command_with_its_options(fake_discord: FakeDiscord, tmp_path: Path) -> None:
    code, out, err = await run_sync(fake_discord, tmp_path, "--global")
    assert code == 0, err
    assert "command(s) globally" in out
    imagine = fake_discord.commands.find("imagine", None)
    assert imagine is not None
    options = {option["name"]: option for option in imagine["options"]}
    assert options["prompt"]["required"]
    assert options["prompt"]["max_length"] == 2048
    # Since issue 16 the ratios on offer follow the chosen model: suggested as the member types, not a fixed list.
    assert options["aspect_ratio"]["autocomplete"]
    assert options["model"]["autocomplete"]
    assert (options["count"]["min_value"], options["count"]["max_value"]) == (1, 4)
    assert options["image"]["type"] == 11  # an attachment
    assert not any(options[name].get("required") for name in ("aspect_ratio", "model", "count", "image"))
    assert fake_discord.commands.find("Edit image", None, 3) is not None  # the message context menu
    assert options["seed"]["min_value"] == 0
    assert options["seed"]["max_value"] == 2147483647
    assert all(option["description"] for option in imagine["options"])
    assert fake_discord.bot_token not in out + err


async def test_guild_sync_uses_the_configured_guilds(
    fake_discord: FakeDiscord, guild: FakeGuild, tmp_path: Path
) -> None:
    code, out, err = await run_sync(fake_discord, tmp_path, guild_ids=str(guild.id))
    assert code == 0, err
    assert "to 1 server(s)" in out
    assert fake_discord.commands.find("imagine", guild.id) is not None


async def test_sync_without_guilds_or_global_explains_itself(fake_discord: FakeDiscord, tmp_path: Path) -> None:
    code, _, err = await run_sync(fake_discord, tmp_path)
    assert code == 2
    assert "DISCORD_GUILD_IDS" in err
    assert "--global" in err
    assert not fake_discord.commands.synced
