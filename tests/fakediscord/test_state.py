"""The fake's own bookkeeping: tiers, extra permissions, application and gateway info."""

from __future__ import annotations

import discord
from discord.ext import commands
from discord.http import Route

from tests.fakediscord import FakeChannel, FakeDiscord, FakeGuild, Perm, run_bot

MIB = 1024 * 1024


def test_upload_limit_follows_premium_tier(fake_discord: FakeDiscord) -> None:
    limits = [fake_discord.add_guild(f"tier {tier}", premium_tier=tier).upload_limit for tier in range(4)]
    assert limits == [10 * MIB, 10 * MIB, 50 * MIB, 100 * MIB]


async def test_permissions_extra_lets_a_member_ping_everyone(guild: FakeGuild, general: FakeChannel) -> None:
    herald = guild.add_member("herald", permissions_extra=Perm.MENTION_EVERYONE)
    plain = guild.member("alice")
    assert (await herald.send(general, "@everyone hear ye")).pings.everyone
    assert not (await plain.send(general, "@everyone hear me")).pings.everyone
    assert [r.name for r in herald.roles] == ["herald-extra"]


async def test_gateway_and_application_info(fake_discord: FakeDiscord) -> None:
    fake_discord.privileged_intents = discord.Intents(members=True).value
    bot = commands.Bot(command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0.05)
    async with run_bot(fake_discord, bot):
        info = await bot.application_info()
        assert info.id == fake_discord.application_id
        assert info.flags.gateway_guild_members_limited
        shards, url, limit = await bot.http.get_bot_gateway()
        assert (url, shards, limit["remaining"]) == (fake_discord.gateway_url, 1, 999)
        assert await bot.http.request(Route("GET", "/gateway")) == {"url": fake_discord.gateway_url}
        app = await bot.http.request(Route("GET", "/applications/@me"))
        assert app["id"] == str(fake_discord.application_id)
        user = await bot.fetch_user(fake_discord.owner.id)
        assert user.name == "app-owner"
    assert not fake_discord.unknown_routes


async def test_sync_guild_and_update_channel_reach_the_bot(fake_discord: FakeDiscord, guild: FakeGuild) -> None:
    bot = commands.Bot(command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0.05)
    async with run_bot(fake_discord, bot):
        later = guild.add_channel("later")
        assert bot.get_channel(later.id) is None
        await fake_discord.sync_guild(guild)
        await fake_discord.wait_for(lambda: bot.get_channel(later.id))
        later.set_overwrite(guild.bot_role, deny=Perm.SEND_MESSAGES)
        await fake_discord.update_channel(later)

        def bot_cannot_send() -> bool:
            channel = bot.get_channel(later.id)
            assert isinstance(channel, discord.TextChannel)
            return not channel.permissions_for(channel.guild.me).send_messages

        await fake_discord.wait_for(bot_cannot_send)
