"""Rate limits: real headers, 429s discord.py retries, the global limit, and the Cloudflare ban."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import discord
import pytest
from discord.ext import commands

from tests.fakediscord import FakeChannel, FakeDiscord, FakeGuild, FakeMember, Perm, run_bot

EDIT = "PATCH /channels/{channel_id}/messages/{message_id}"


class PlainBot(commands.Bot):
    def __init__(self) -> None:
        super().__init__(command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0.05)

    def text_channel(self, channel: FakeChannel) -> discord.TextChannel:
        found = self.get_channel(channel.id)
        assert isinstance(found, discord.TextChannel)
        return found


async def test_hidden_limit_serves_a_429_that_discord_py_retries(
    fake_discord: FakeDiscord, general: FakeChannel
) -> None:
    fake_discord.ratelimits.set_bucket(EDIT, limit=1, per=0.5, advertise=False)
    async with run_bot(fake_discord, PlainBot()) as bot:
        message = await bot.text_channel(general).send("v0")
        await message.edit(content="v1")
        await message.edit(content="v2")
    assert fake_discord.message(message.id).content == "v2"
    assert fake_discord.rate_limited_count == 1
    assert [r.status for r in fake_discord.requests_to(EDIT)] == [200, 429, 200]


async def test_advertised_bucket_makes_discord_py_wait_instead(fake_discord: FakeDiscord, general: FakeChannel) -> None:
    fake_discord.ratelimits.set_bucket(EDIT, limit=1, per=0.4)
    async with run_bot(fake_discord, PlainBot()) as bot:
        message = await bot.text_channel(general).send("v0")
        started = time.monotonic()
        await message.edit(content="v1")
        await message.edit(content="v2")
        assert time.monotonic() - started >= 0.3
    assert fake_discord.rate_limited_count == 0


async def test_reactions_bucket_is_one_per_quarter_second(fake_discord: FakeDiscord, general: FakeChannel) -> None:
    async with run_bot(fake_discord, PlainBot()) as bot:
        message = await bot.text_channel(general).send("react")
        started = time.monotonic()
        for emoji in "🔄👍🎨":
            await message.add_reaction(emoji)
        assert time.monotonic() - started >= 0.45
    assert fake_discord.rate_limited_count == 0
    assert len(fake_discord.message(message.id).reactions) == 3


async def test_headers_and_429_body_are_discords(fake_discord: FakeDiscord, general: FakeChannel) -> None:
    fake_discord.ratelimits.set_bucket("GET /channels/{channel_id}", limit=1, per=5.0)
    url = f"{fake_discord.rest_base}/channels/{general.id}"
    headers = {"Authorization": f"Bot {fake_discord.bot_token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.get(url) as ok:
            assert ok.status == 200
            assert ok.headers["Content-Type"] == "application/json"
            assert (ok.headers["X-RateLimit-Limit"], ok.headers["X-RateLimit-Remaining"]) == ("1", "0")
            assert 4.0 < float(ok.headers["X-RateLimit-Reset-After"]) <= 5.0
            assert float(ok.headers["X-RateLimit-Reset"]) > time.time()
            assert ok.headers["X-RateLimit-Bucket"]
        async with session.get(url) as limited:
            assert limited.status == 429
            assert limited.headers["Content-Type"] == "application/json"
            body = await limited.json()
            assert set(body) == {"message", "retry_after", "global"}
            assert body["global"] is False
            assert limited.headers["Via"] == "1.1 google"
            assert int(limited.headers["Retry-After"]) >= 1
            assert limited.headers["X-RateLimit-Scope"] == "user"


async def test_global_limit_is_per_bot_token_and_spares_interactions(
    fake_discord: FakeDiscord, guild: FakeGuild, general: FakeChannel, alice: FakeMember
) -> None:
    bot = PlainBot()

    @bot.tree.command()
    async def ping(interaction: discord.Interaction) -> None:
        """Answer pong."""
        await interaction.response.send_message("pong")

    async with run_bot(fake_discord, bot):
        fake_discord.ratelimits.global_limit = 3
        fake_discord.ratelimits.global_per = 0.3
        fake_discord.clock.advance(1.0)  # a fresh global window
        channels = await asyncio.gather(*(bot.fetch_channel(general.id) for _ in range(5)))
        assert len(channels) == 5
        assert fake_discord.rate_limited_count >= 1
        for _ in range(3):
            await bot.fetch_channel(general.id)  # fill the window again
        interaction = await alice.run_command("ping", general)
        assert (await interaction.wait_for_message()).content == "pong"
    limited = [r for r in fake_discord.requests if r.status == 429]
    assert limited
    assert all(r.key == "GET /channels/{channel_id}" for r in limited)


async def test_too_many_invalid_requests_get_a_cloudflare_429_discord_py_does_not_retry(
    fake_discord: FakeDiscord, guild: FakeGuild, general: FakeChannel
) -> None:
    fake_discord.ratelimits.invalid_limit = 3
    general.set_overwrite(guild.bot_role, deny=Perm.SEND_MESSAGES)
    async with run_bot(fake_discord, PlainBot()) as bot:
        channel = bot.text_channel(general)
        for _ in range(3):
            with pytest.raises(discord.Forbidden):
                await channel.send("no")
        with pytest.raises(discord.HTTPException) as banned:
            await channel.send("no")
        assert banned.value.status == 429
        assert banned.value.text == "error code: 1015"
    assert fake_discord.requests[-1].status == 429
