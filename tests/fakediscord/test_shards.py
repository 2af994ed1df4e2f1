"""Sharding: each gateway session gets only its shard's guilds and events, as on Discord."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp
import discord
import pytest

from tests.fakediscord import FakeChannel, FakeDiscord, FakeGuild, FakeMember, Intent, run_bot, shard_of


@dataclass
class Place:
    guild: FakeGuild
    channel: FakeChannel
    member: FakeMember


def place(fake: FakeDiscord, name: str, shard_id: int) -> Place:
    guild = fake.add_guild(name, on_shard=(shard_id, 2))
    return Place(guild, guild.add_channel("general"), guild.add_member(f"member-{name}"))


def on_shard(fake: FakeDiscord, shard_id: int, num_shards: int) -> set[int]:
    return {g.id for g in fake.guilds.values() if shard_of(g.id, num_shards) == shard_id}


async def _identify(fake: FakeDiscord, shard: object) -> tuple[dict[str, Any] | None, list[str], int | None]:
    """Raw websocket: HELLO, IDENTIFY with `shard` (`...`: no shard field) and the GUILDS intent.

    READY's data (None if the socket closed instead), the ids of the GUILD_CREATEs that
    followed it (one per guild READY listed), and the close code.
    """
    payload: dict[str, object] = {"token": fake.bot_token, "intents": int(Intent.GUILDS), "properties": {}}
    if shard is not ...:
        payload["shard"] = shard
    async with aiohttp.ClientSession() as session, session.ws_connect(fake.gateway_url + "?v=10&encoding=json") as ws:
        await ws.receive()  # HELLO
        await ws.send_str(json.dumps({"op": 2, "d": payload}))
        msg = await ws.receive()
        if msg.type is not aiohttp.WSMsgType.TEXT:
            return None, [], ws.close_code
        ready: dict[str, Any] = json.loads(msg.data)["d"]
        created = []
        for _ in ready["guilds"]:
            frame = json.loads((await ws.receive()).data)
            assert frame["t"] == "GUILD_CREATE"
            created.append(frame["d"]["id"])
        await ws.close()
        return ready, created, ws.close_code


@pytest.mark.parametrize("shard", [[0, 0], [-1, 2], [2, 2], [1], [0, 1, 2], ["0", "2"], [True, 2], "0,2"])
async def test_invalid_shards_close_4010(fake_discord: FakeDiscord, shard: object) -> None:
    assert await _identify(fake_discord, shard) == (None, [], 4010)
    assert not fake_discord.gateway.sessions


async def test_ready_and_guild_creates_carry_only_the_identified_shards_guilds(fake_discord: FakeDiscord) -> None:
    a, b = place(fake_discord, "A", 0), place(fake_discord, "B", 1)
    ready, created, _ = await _identify(fake_discord, [1, 2])
    assert ready is not None
    assert ready["shard"] == [1, 2]
    assert {int(g["id"]) for g in ready["guilds"]} == {int(i) for i in created} == on_shard(fake_discord, 1, 2)
    assert b.guild.id in on_shard(fake_discord, 1, 2)
    assert a.guild.id not in on_shard(fake_discord, 1, 2)
    # Unsharded, or one shard of one: every guild, and READY echoes `shard` only when it was sent.
    for shard in (..., [0, 1]):
        ready, created, _ = await _identify(fake_discord, shard)
        assert ready is not None
        assert ready.get("shard") == (None if shard is ... else shard)
        assert {int(g["id"]) for g in ready["guilds"]} == {int(i) for i in created} == set(fake_discord.guilds)


async def test_fewer_shards_than_discord_requires_closes_4011(fake_discord: FakeDiscord) -> None:
    fake_discord.min_shards = 2
    assert await _identify(fake_discord, ...) == (None, [], 4011)
    assert await _identify(fake_discord, [0, 1]) == (None, [], 4011)
    ready, _, _ = await _identify(fake_discord, [1, 2])
    assert ready is not None
    assert ready["shard"] == [1, 2]
    with pytest.raises(discord.ConnectionClosed) as closed:
        async with run_bot(fake_discord, discord.Client(intents=discord.Intents.default())):
            pass
    assert closed.value.code == 4011
