"""Application commands: bulk overwrite answers with ids, schema checks, the daily create limit."""

from __future__ import annotations

from typing import Any, Literal

import discord
import pytest
from discord import app_commands
from discord.ext import commands

from tests.fakediscord import FakeChannel, FakeDiscord, FakeGuild, FakeMember, run_bot

GUILD_COMMANDS = "PUT /applications/{application_id}/guilds/{guild_id}/commands"


class SyncBot(commands.Bot):
    """Syncs to one guild, or globally when `guild_id` is None."""

    def __init__(self, guild_id: int | None) -> None:
        super().__init__(command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0.05)
        self.guild_id = guild_id
        self.synced: list[app_commands.AppCommand] = []
        self.calls: list[dict[str, Any]] = []

        @self.tree.command()
        @app_commands.describe(prompt="What to draw", aspect_ratio="Shape", seed="Seed")
        async def imagine(
            interaction: discord.Interaction,
            prompt: app_commands.Range[str, 1, 1500],
            aspect_ratio: Literal["1:1", "16:9"] = "1:1",
            seed: app_commands.Range[int, 0, 2**31 - 1] | None = None,
        ) -> None:
            """Draw an image."""
            self.calls.append({"prompt": prompt, "aspect_ratio": aspect_ratio, "seed": seed})
            await interaction.response.send_message("queued", ephemeral=True)

    async def setup_hook(self) -> None:
        if self.guild_id is None:
            self.synced = await self.tree.sync()
            return
        guild = discord.Object(self.guild_id)
        self.tree.copy_global_to(guild=guild)
        self.synced = await self.tree.sync(guild=guild)


async def test_guild_sync_answers_with_ids_and_members_get_typed_options(
    fake_discord: FakeDiscord, guild: FakeGuild, general: FakeChannel, alice: FakeMember
) -> None:
    bot = SyncBot(guild.id)
    async with run_bot(fake_discord, bot):
        stored = fake_discord.commands.registered(guild.id)
        assert [(c.name, c.id) for c in bot.synced] == [(c["name"], int(c["id"])) for c in stored]
        assert [c.id for c in await bot.tree.fetch_commands(guild=discord.Object(guild.id))] == [
            c.id for c in bot.synced
        ]
        interaction = await alice.run_command("imagine", general, prompt="a fox", aspect_ratio="16:9", seed=7)
        await interaction.wait_for_message()
        assert interaction.data["guild_id"] == str(guild.id)
        with pytest.raises(AssertionError, match="required"):
            await alice.run_command("imagine", general)
        with pytest.raises(AssertionError, match="not a synced command"):
            await alice.run_command("upscale", general, prompt="x")
    assert bot.calls == [{"prompt": "a fox", "aspect_ratio": "16:9", "seed": 7}]
    assert [r.status for r in fake_discord.requests_to(GUILD_COMMANDS)] == [200]


async def test_global_sync_is_found_without_a_guild_id(
    fake_discord: FakeDiscord, general: FakeChannel, alice: FakeMember
) -> None:
    bot = SyncBot(None)
    async with run_bot(fake_discord, bot):
        interaction = await alice.run_command("imagine", general, prompt="a cat")
        await interaction.wait_for_message()
        assert "guild_id" not in interaction.data
    assert bot.calls == [{"prompt": "a cat", "aspect_ratio": "1:1", "seed": None}]


def _command(name: str = "ok", **extra: Any) -> dict[str, Any]:
    return {"name": name, "description": "A command", "type": 1} | extra


def _option(name: str = "opt", **extra: Any) -> dict[str, Any]:
    return {"name": name, "description": "An option", "type": 3} | extra


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ([_command("Imagine")], "0.name"),
        ([_command("has space")], "0.name"),
        ([_command(description="")], "0.description"),
        ([_command(description="d" * 101)], "0.description"),
        ([_command(options=[_option(f"o{i}") for i in range(26)])], "0.options"),
        ([_command(options=[_option(choices=[{"name": f"c{i}", "value": str(i)} for i in range(26)])])], "choices"),
        ([_command(options=[_option(max_length=6001)])], "0.options.0.max_length"),
        ([_command(options=[_option(max_length=0)])], "0.options.0.max_length"),
        ([_command(options=[_option("a"), _option("b", required=True)])], "0.options.1.required"),
        ([_command(), _command()], "1.name"),
        ([_command(f"c{i}") for i in range(101)], "Must be 100 or fewer"),
    ],
)
async def test_bad_command_schema_refused_50035(
    fake_discord: FakeDiscord, guild: FakeGuild, payload: list[dict[str, Any]], field: str
) -> None:
    async with run_bot(fake_discord, SyncBot(guild.id)) as bot:
        before = fake_discord.commands.registered(guild.id)
        with pytest.raises(discord.HTTPException) as refused:
            await bot.http.bulk_upsert_guild_commands(fake_discord.application_id, guild.id, payload=payload)
        assert (refused.value.status, refused.value.code) == (400, 50035)
        assert field in refused.value.text
        assert fake_discord.commands.registered(guild.id) == before


async def test_sync_of_a_bad_schema_fails_startup(fake_discord: FakeDiscord, guild: FakeGuild) -> None:
    bot = SyncBot(guild.id)
    bot.tree.add_command(app_commands.Command(name="long", description="d" * 101, callback=_noop))
    with pytest.raises(app_commands.CommandSyncFailure) as refused:
        async with run_bot(fake_discord, bot):
            pass
    assert refused.value.code == 50035
    assert "description" in str(refused.value)


async def test_sync_over_the_daily_create_limit_fails_startup(fake_discord: FakeDiscord, guild: FakeGuild) -> None:
    bot = SyncBot(guild.id)
    bot.tree.add_command(app_commands.Command(name="second", description="d", callback=_noop))
    fake_discord.commands.daily_create_limit = 1  # two new names
    with pytest.raises(discord.HTTPException) as refused:
        async with run_bot(fake_discord, bot):
            pass
    assert refused.value.code == 30034


async def _noop(interaction: discord.Interaction) -> None:
    return None


async def test_200_creates_per_day_per_guild_new_names_count(fake_discord: FakeDiscord, guild: FakeGuild) -> None:
    async with run_bot(fake_discord, SyncBot(guild.id)) as bot:  # 1 create: /imagine
        upsert = bot.http.bulk_upsert_guild_commands
        app_id = fake_discord.application_id
        await upsert(app_id, guild.id, payload=[_command(f"a{i}") for i in range(100)])
        await upsert(app_id, guild.id, payload=[_command(f"a{i}") for i in range(99)])  # no new names
        with pytest.raises(discord.HTTPException) as refused:
            await upsert(app_id, guild.id, payload=[_command(f"b{i}") for i in range(100)])
        assert (refused.value.status, refused.value.code) == (400, 30034)
        await upsert(app_id, guild.id, payload=[_command(f"b{i}") for i in range(99)])  # 1 + 100 + 99 = 200
        fake_discord.clock.advance(24 * 60 * 60)
        await upsert(app_id, guild.id, payload=[_command("fresh")])
