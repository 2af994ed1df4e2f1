"""Fault injection: chosen failures on chosen routes, lost responses, and a random fault rate."""

from __future__ import annotations

import discord
import pytest
from discord.ext import commands

from tests.fakediscord import FakeChannel, FakeDiscord, RouteInfo, run_bot

CREATE = "POST /channels/{channel_id}/messages"


class PlainBot(commands.Bot):
    def __init__(self) -> None:
        super().__init__(command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0.05)

    def text_channel(self, channel: FakeChannel) -> discord.TextChannel:
        found = self.get_channel(channel.id)
        assert isinstance(found, discord.TextChannel)
        return found


async def test_injected_500_is_retried_by_discord_py(fake_discord: FakeDiscord, general: FakeChannel) -> None:
    fake_discord.inject_fault(CREATE, 500, times=1)
    async with run_bot(fake_discord, PlainBot()) as bot:
        await bot.text_channel(general).send("survives")
    assert [r.status for r in fake_discord.requests_to(CREATE)] == [500, 200]
    assert [m.content for m in general.messages] == ["survives"]


async def test_injected_429_carries_via_and_is_retried(fake_discord: FakeDiscord, general: FakeChannel) -> None:
    fake_discord.inject_fault(lambda info: info.method == "POST" and "messages" in info.template, 429, retry_after=0.05)
    async with run_bot(fake_discord, PlainBot()) as bot:
        await bot.text_channel(general).send("after a 429")
    assert fake_discord.rate_limited_count == 1
    assert [r.status for r in fake_discord.requests_to(CREATE)] == [429, 200]


async def test_fault_after_handling_loses_the_response_and_the_nonce_keeps_the_retry_from_duplicating(
    fake_discord: FakeDiscord, general: FakeChannel
) -> None:
    """discord.py sends every message with a nonce and `enforce_nonce`; Discord answers a repeat with the first."""
    fake_discord.inject_fault(CREATE, 429, retry_after=0.05, after=True)
    async with run_bot(fake_discord, PlainBot()) as bot:
        sent = await bot.text_channel(general).send("once?")
    assert [m.content for m in general.messages] == ["once?"]
    assert sent.id == general.messages[0].id
    assert len(fake_discord.requests_to(CREATE)) == 2


async def test_a_repeated_nonce_without_enforce_nonce_posts_again(
    fake_discord: FakeDiscord, general: FakeChannel
) -> None:
    async with run_bot(fake_discord, PlainBot()) as bot:
        route = discord.http.Route("POST", "/channels/{channel_id}/messages", channel_id=general.id)
        for _ in range(2):
            await bot.http.request(route, json={"content": "twice", "nonce": "42"})
    assert [m.content for m in general.messages] == ["twice", "twice"]


async def test_random_faults_hit_bot_rest_calls_only(fake_discord: FakeDiscord, general: FakeChannel) -> None:
    bot = PlainBot()
    async with run_bot(fake_discord, bot):
        fake_discord.faults.random_statuses = (429,)
        fake_discord.fault_rate = 0.4
        for i in range(4):
            await bot.text_channel(general).send(f"message {i}")
        fake_discord.fault_rate = 0.0
    assert [m.content for m in general.messages] == [f"message {i}" for i in range(4)]
    assert fake_discord.faults.served
    assert all(status == 429 for _, status in fake_discord.faults.served)


async def test_fault_count_is_bounded(fake_discord: FakeDiscord, general: FakeChannel) -> None:
    def every_create(info: RouteInfo) -> bool:
        return info.key == CREATE

    fake_discord.inject_fault(every_create, 429, times=None, retry_after=0.01)
    async with run_bot(fake_discord, PlainBot()) as bot:
        with pytest.raises(discord.HTTPException) as gave_up:
            await bot.text_channel(general).send("never")
        assert gave_up.value.status == 429
    assert len(fake_discord.requests_to(CREATE)) == 5  # discord.py tries five times
    assert general.messages == []
