"""Sharding: each gateway session gets only its shard's guilds and events, as on Discord.

Two unmodified `AutoShardedClient`s stand for two processes of one bot (`shard_count=2`,
`shard_ids=[0]` and `[1]`), with guild A on shard 0 and guild B on shard 1.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import discord
import pytest

from tests.fakediscord import (
    FakeChannel,
    FakeDiscord,
    FakeGuild,
    FakeMember,
    Intent,
    run_bot,
    run_bots,
    shard_of,
)


class ShardClient(discord.AutoShardedClient):
    """One "process": records what reaches it and answers every interaction with the shards it runs."""

    def __init__(self, shard_ids: list[int] | None, shard_count: int | None = 2) -> None:
        intents = discord.Intents.default()
        if shard_ids is None:  # every shard; with no count, as many as GET /gateway/bot recommends
            super().__init__(intents=intents, shard_count=shard_count, guild_ready_timeout=0.05)
        else:
            super().__init__(intents=intents, shard_count=shard_count, shard_ids=shard_ids, guild_ready_timeout=0.05)
        self.received: list[str] = []  # every dispatch's event name, in the order the socket delivered it
        self.message_ids: list[int] = []
        self.reactions: list[discord.RawReactionActionEvent] = []
        self.interactions: list[discord.Interaction] = []

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """discord.py waits 5 s between one client's IDENTIFYs (max_concurrency 1); the fake needs no wait."""

    async def on_socket_event_type(self, event_type: str) -> None:
        self.received.append(event_type)

    async def on_message(self, message: discord.Message) -> None:
        self.message_ids.append(message.id)

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        self.reactions.append(payload)

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        self.interactions.append(interaction)
        await interaction.response.send_message(f"shards {self.shard_ids}")


@dataclass
class Place:
    guild: FakeGuild
    channel: FakeChannel
    member: FakeMember


@dataclass
class Shards:
    """Guild A on shard 0 and guild B on shard 1 of 2, a client per shard, and a DM with A's member."""

    fake: FakeDiscord
    a: Place
    b: Place
    clients: list[ShardClient]
    dm: FakeChannel

    async def settle(self, *places: Place) -> None:
        """Until the clients of `places` (default: both) have handled every frame sent to them so far.

        A message in the client's guild is a barrier: one socket delivers in order, and
        discord.py runs the listeners of earlier frames first.
        """
        for where in places or (self.a, self.b):
            client = self.clients[shard_of(where.guild.id, 2)]
            barrier = await where.member.send(where.channel, "barrier")
            await self.fake.wait_for(lambda: barrier.id in client.message_ids)  # noqa: B023  # awaited at once


def place(fake: FakeDiscord, name: str, shard_id: int) -> Place:
    guild = fake.add_guild(name, on_shard=(shard_id, 2))
    return Place(guild, guild.add_channel("general"), guild.add_member(f"member-{name}"))


@pytest.fixture
async def shards(fake_discord: FakeDiscord) -> AsyncIterator[Shards]:
    a, b = place(fake_discord, "A", 0), place(fake_discord, "B", 1)
    dm = fake_discord.dm_channel(a.member.user)
    async with run_bots(fake_discord, [ShardClient([0]), ShardClient([1])]) as clients:
        yield Shards(fake_discord, a, b, clients, dm)


def guild_ids(client: discord.Client) -> set[int]:
    return {g.id for g in client.guilds}


def on_shard(fake: FakeDiscord, shard_id: int, num_shards: int) -> set[int]:
    return {g.id for g in fake.guilds.values() if shard_of(g.id, num_shards) == shard_id}


async def test_each_process_caches_only_the_guilds_of_its_shard(shards: Shards) -> None:
    first, second = shards.clients
    assert shards.a.guild.id in guild_ids(first)
    assert shards.b.guild.id in guild_ids(second)
    assert guild_ids(first) == on_shard(shards.fake, 0, 2)  # the fixture's "Test Server" lands on either
    assert guild_ids(second) == on_shard(shards.fake, 1, 2)
    assert first.is_ready()
    assert second.is_ready()
    assert [s.shard for s in shards.fake.gateway.sessions.values()] == [(0, 2), (1, 2)]


async def test_an_interaction_reaches_only_the_process_running_its_guilds_shard(shards: Shards) -> None:
    first, second = shards.clients
    in_a = await shards.a.member.run_command("imagine", shards.a.channel)
    in_b = await shards.b.member.run_command("imagine", shards.b.channel)
    assert (await in_a.wait_for_message()).content == "shards [0]"
    assert (await in_b.wait_for_message()).content == "shards [1]"
    await shards.settle()
    assert [i.id for i in first.interactions] == [in_a.id]
    assert [i.id for i in second.interactions] == [in_b.id]
    assert not shards.fake.failed_interactions


async def test_a_dm_interaction_reaches_only_shard_0(shards: Shards) -> None:
    first, second = shards.clients
    interaction = await shards.a.member.run_command("imagine", shards.dm)
    assert interaction.guild is None
    assert (await interaction.wait_for_message()).content == "shards [0]"
    await shards.settle()
    assert [i.id for i in first.interactions] == [interaction.id]
    assert "INTERACTION_CREATE" not in second.received


async def test_reactions_follow_their_guild_and_dm_reactions_go_to_shard_0(shards: Shards) -> None:
    first, second = shards.clients
    in_a = await shards.a.member.send(shards.a.channel, "react to me", dispatch=False)
    in_b = await shards.b.member.send(shards.b.channel, "react to me", dispatch=False)
    in_dm = await shards.a.member.send(shards.dm, "react to me", dispatch=False)
    await shards.a.member.react(in_a, "👍")
    await shards.b.member.react(in_b, "👍")
    await shards.a.member.react(in_dm, "👍")
    await shards.settle()
    assert [r.message_id for r in first.reactions] == [in_a.id, in_dm.id]
    assert [r.message_id for r in second.reactions] == [in_b.id]


async def test_guild_events_reach_only_the_guilds_shard_and_dms_shard_0(shards: Shards) -> None:
    first, second = shards.clients
    fake = shards.fake
    for client in shards.clients:
        client.received.clear()  # READY's GUILD_CREATEs
    in_b = await shards.b.member.send(shards.b.channel, "hello B")
    in_dm = await shards.a.member.send(shards.dm, "hello bot")
    await fake.delete_message(in_b)
    await fake.update_channel(shards.b.channel)
    await fake.sync_guild(shards.b.guild)
    await shards.settle()
    assert in_b.id in second.message_ids
    assert in_b.id not in first.message_ids
    assert in_dm.id in first.message_ids
    assert in_dm.id not in second.message_ids
    about_b = ["MESSAGE_DELETE", "CHANNEL_UPDATE", "GUILD_CREATE"]
    assert [event for event in second.received if event in about_b] == about_b
    assert [event for event in first.received if event in about_b] == []

    await fake.remove_guild(shards.b.guild)
    await fake.wait_for(lambda: shards.b.guild.id not in guild_ids(second))
    await shards.settle(shards.a)
    assert "GUILD_DELETE" not in first.received


async def test_a_resumed_session_keeps_its_shard(shards: Shards) -> None:
    first = shards.clients[0]
    await shards.fake.drop_gateway()
    await shards.fake.wait_for(lambda: shards.fake.gateway.resume_count == 2)
    in_b = await shards.b.member.run_command("imagine", shards.b.channel)
    assert (await in_b.wait_for_message()).content == "shards [1]"
    await shards.settle()
    assert not first.interactions
    assert [s.shard for s in shards.fake.gateway.sessions.values()] == [(0, 2), (1, 2)]
    assert shards.fake.gateway.identify_count == 2


async def test_two_sessions_on_the_same_shard_both_receive_its_events(fake_discord: FakeDiscord) -> None:
    """Discord docs, Gateway -> Sharding: several sessions may identify with the same [shard_id, num_shards]."""
    a = place(fake_discord, "A", 0)
    async with run_bots(fake_discord, [ShardClient([0]), ShardClient([0])]) as clients:
        message = await a.member.send(a.channel, "to both")
        await fake_discord.wait_for(lambda: all(message.id in c.message_ids for c in clients))


async def test_without_a_count_the_bot_runs_the_shards_gateway_bot_recommends(fake_discord: FakeDiscord) -> None:
    place(fake_discord, "A", 0)
    place(fake_discord, "B", 1)
    fake_discord.recommended_shards = 2
    async with run_bot(fake_discord, ShardClient(None, shard_count=None)) as client:
        assert client.shard_count == 2
        assert set(client.shards) == {0, 1}
        assert guild_ids(client) == set(fake_discord.guilds)
    assert fake_discord.requests_to("GET /gateway/bot")


async def test_a_shard_outside_the_count_closes_4010(fake_discord: FakeDiscord) -> None:
    with pytest.raises(discord.ConnectionClosed) as closed:
        async with run_bot(fake_discord, ShardClient([2], shard_count=2)):
            pass
    assert closed.value.code == 4010
    assert fake_discord.gateway.close_codes == [4010]


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
    with pytest.raises(discord.ConnectionClosed) as closed:
        async with run_bot(fake_discord, discord.Client(intents=discord.Intents.default())):
            pass
    assert closed.value.code == 4011
