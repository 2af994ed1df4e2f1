"""Gateway: READY/GUILD_CREATE, IDENTIFY checks, RESUME with replay, intent-gated dispatches."""

from __future__ import annotations

import json

import aiohttp
import discord
import pytest
from discord.ext import commands

from tests.fakediscord import FakeChannel, FakeDiscord, FakeGuild, FakeMember, Intent, Perm, run_bot


class ListenerBot(commands.Bot):
    """Records raw and cached reaction/delete events."""

    def __init__(self, intents: discord.Intents | None = None) -> None:
        super().__init__(command_prefix="!", intents=intents or discord.Intents.default(), guild_ready_timeout=0.05)
        self.raw_adds: list[discord.RawReactionActionEvent] = []
        self.raw_removes: list[discord.RawReactionActionEvent] = []
        self.cached_adds: list[tuple[discord.Reaction, discord.abc.User]] = []
        self.raw_deletes: list[discord.RawMessageDeleteEvent] = []
        self.messages: list[discord.Message] = []
        self.resumes = 0

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        self.raw_adds.append(payload)

    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        self.raw_removes.append(payload)

    async def on_reaction_add(self, reaction: discord.Reaction, user: discord.abc.User) -> None:
        self.cached_adds.append((reaction, user))

    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        self.raw_deletes.append(payload)

    async def on_message(self, message: discord.Message) -> None:
        self.messages.append(message)

    async def on_resumed(self) -> None:
        self.resumes += 1


async def test_ready_puts_guild_channels_roles_and_members_in_cache(
    fake_discord: FakeDiscord, guild: FakeGuild, general: FakeChannel
) -> None:
    fake_discord.privileged_intents = Intent.GUILD_MEMBERS
    intents = discord.Intents.default()
    intents.members = True
    async with run_bot(fake_discord, ListenerBot(intents)) as bot:
        assert bot.user is not None
        assert bot.user.id == fake_discord.bot_user.id
        cached = bot.get_guild(guild.id)
        assert cached is not None
        assert cached.name == "Test Server"
        channel = cached.get_channel(general.id)
        assert isinstance(channel, discord.TextChannel)
        assert channel.name == "general"
        assert {r.name for r in cached.roles} == {"@everyone", "ImagineBot", "Moderators"}
        assert {m.name for m in cached.members} == {"ImagineBot", "alice", "bob", "moderator"}
        assert cached.me.guild_permissions.send_messages
        assert cached.filesize_limit == guild.upload_limit == 10 * 1024 * 1024
    assert fake_discord.gateway.identify_count == 1
    assert not fake_discord.unknown_routes


async def test_without_members_intent_only_the_bot_member_is_sent(fake_discord: FakeDiscord, guild: FakeGuild) -> None:
    async with run_bot(fake_discord, ListenerBot()) as bot:
        cached = bot.get_guild(guild.id)
        assert cached is not None
        assert [m.name for m in cached.members] == ["ImagineBot"]


async def test_privileged_intent_not_enabled_closes_4014(fake_discord: FakeDiscord) -> None:
    intents = discord.Intents.default()
    intents.message_content = True
    with pytest.raises(discord.PrivilegedIntentsRequired):
        async with run_bot(fake_discord, ListenerBot(intents)):
            pass
    assert fake_discord.gateway.close_codes == [4014]


async def test_enabled_privileged_intent_is_accepted(fake_discord: FakeDiscord) -> None:
    fake_discord.privileged_intents = Intent.MESSAGE_CONTENT
    intents = discord.Intents.default()
    intents.message_content = True
    async with run_bot(fake_discord, ListenerBot(intents)) as bot:
        assert bot.is_ready()


async def test_bad_token_fails_login(fake_discord: FakeDiscord) -> None:
    with pytest.raises(discord.LoginFailure):
        async with run_bot(fake_discord, ListenerBot(), token="not-the-token"):
            pass
    assert fake_discord.requests[-1].status == 401


async def _identify(fake: FakeDiscord, payload: dict[str, object]) -> tuple[list[int], int | None]:
    """Raw websocket: HELLO, heartbeat, IDENTIFY; returns the ops received and the close code."""
    ops: list[int] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(fake.gateway_url + "?v=10&encoding=json") as ws:
        hello = json.loads((await ws.receive()).data)
        ops.append(hello["op"])
        await ws.send_str(json.dumps({"op": 1, "d": None}))
        ops.append(json.loads((await ws.receive()).data)["op"])
        await ws.send_str(json.dumps({"op": 2, "d": payload}))
        while (msg := await ws.receive()).type is aiohttp.WSMsgType.TEXT:
            ops.append(json.loads(msg.data)["op"])
        return ops, ws.close_code


async def test_identify_with_bad_token_closes_4004(fake_discord: FakeDiscord) -> None:
    ops, code = await _identify(fake_discord, {"token": "wrong", "intents": 1, "properties": {}})
    assert ops == [10, 11]  # HELLO, HEARTBEAT_ACK
    assert code == 4004


async def test_identify_with_invalid_intents_closes_4013(fake_discord: FakeDiscord) -> None:
    ops, code = await _identify(fake_discord, {"token": fake_discord.bot_token, "intents": 1 << 30, "properties": {}})
    assert (ops, code) == ([10, 11], 4013)


async def test_resume_after_outage_replays_missed_events(
    fake_discord: FakeDiscord, general: FakeChannel, alice: FakeMember, bob: FakeMember
) -> None:
    message = await bob.send(general, "hello", dispatch=False)
    async with run_bot(fake_discord, ListenerBot()) as bot:
        async with fake_discord.gateway_outage():
            await alice.react(message, "👍")  # nobody is connected: buffered
            assert not bot.raw_adds
        await fake_discord.wait_for(lambda: bot.resumes == 1 and bot.raw_adds)
        assert fake_discord.gateway.identify_count == 1
        assert [event for _, event in fake_discord.gateway.replayed] == ["MESSAGE_REACTION_ADD"]
        assert bot.raw_adds[0].user_id == alice.id


async def test_dropped_connection_resumes_and_keeps_receiving(
    fake_discord: FakeDiscord, general: FakeChannel, alice: FakeMember
) -> None:
    message = await alice.send(general, "hi", dispatch=False)
    async with run_bot(fake_discord, ListenerBot()) as bot:
        await fake_discord.drop_gateway()
        await fake_discord.wait_for(lambda: bot.resumes == 1)
        await alice.react(message, "🔄")
        await fake_discord.wait_for(lambda: bot.raw_adds)
    assert fake_discord.gateway.resume_count == 1


async def test_reaction_on_uncached_message_arrives_as_raw_event_only(
    fake_discord: FakeDiscord, general: FakeChannel, alice: FakeMember, bob: FakeMember
) -> None:
    message = await bob.send(general, "from before the restart", dispatch=False)
    async with run_bot(fake_discord, ListenerBot()) as bot:
        await alice.react(message, "🔄")
        await fake_discord.wait_for(lambda: bot.raw_adds)
        await alice.unreact(message, "🔄")
        await fake_discord.wait_for(lambda: bot.raw_removes)
        raw = bot.raw_adds[0]
        assert (raw.message_id, raw.user_id, str(raw.emoji)) == (message.id, alice.id, "🔄")
        assert raw.member is not None
        assert raw.member.id == alice.id
        assert bot.cached_adds == []
    assert message.reactions == {}


async def test_reaction_on_cached_message_also_fires_reaction_add(
    fake_discord: FakeDiscord, general: FakeChannel, alice: FakeMember, bob: FakeMember
) -> None:
    async with run_bot(fake_discord, ListenerBot()) as bot:
        message = await bob.send(general, "fresh")
        await fake_discord.wait_for(lambda: bot.messages)
        await alice.react(message, "🔄")
        await fake_discord.wait_for(lambda: bot.cached_adds)


async def test_reactions_not_delivered_without_the_intent(
    fake_discord: FakeDiscord, general: FakeChannel, alice: FakeMember
) -> None:
    intents = discord.Intents.default()
    intents.reactions = False
    message = await alice.send(general, "react to me", dispatch=False)
    async with run_bot(fake_discord, ListenerBot(intents)) as bot:
        await alice.react(message, "🔄")
        await alice.send(general, "later")  # an event that is delivered, to know the reaction would have been
        await fake_discord.wait_for(lambda: bot.messages)
        assert bot.raw_adds == []
    assert message.reaction_users("🔄") == {alice.id}


async def test_moderator_delete_dispatches_message_delete(
    fake_discord: FakeDiscord, general: FakeChannel, alice: FakeMember
) -> None:
    message = await alice.send(general, "delete me", dispatch=False)
    async with run_bot(fake_discord, ListenerBot()) as bot:
        await fake_discord.delete_message(message)
        await fake_discord.wait_for(lambda: bot.raw_deletes)
        assert bot.raw_deletes[0].message_id == message.id
    assert message.deleted
    assert general.visible_messages() == []


async def test_message_content_hidden_without_the_intent(
    fake_discord: FakeDiscord, general: FakeChannel, alice: FakeMember
) -> None:
    async with run_bot(fake_discord, ListenerBot()) as bot:
        assert bot.user is not None
        await alice.send(general, "secret")
        await alice.send(general, f"{bot.user.mention} hello")
        await fake_discord.wait_for(lambda: len(bot.messages) == 2)
        assert [m.content for m in bot.messages] == ["", f"<@{bot.user.id}> hello"]


async def test_members_need_view_channel_to_react(fake_discord: FakeDiscord, guild: FakeGuild) -> None:
    secret = guild.add_channel("secret")
    alice = guild.member("alice")
    message = await guild.member("moderator").send(secret, "mods only", dispatch=False)
    secret.set_overwrite(guild.everyone, deny=Perm.VIEW_CHANNEL)
    with pytest.raises(AssertionError, match="cannot react"):
        await alice.react(message, "👍")


async def test_run_bot_reraises_a_crash_during_the_test(fake_discord: FakeDiscord) -> None:
    async def crash_mid_test() -> None:
        async with run_bot(fake_discord, ListenerBot()) as bot:
            await fake_discord.drop_gateway(code=4004)  # as after a token reset: not resumable
            await fake_discord.wait_for(bot.is_closed)

    with pytest.raises(discord.ConnectionClosed) as closed:
        await crash_mid_test()
    assert closed.value.code == 4004
