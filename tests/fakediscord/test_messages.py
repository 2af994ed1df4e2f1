"""Observed truth about messages: pings, replies, DMs, unknown ids and routes, deleted channels."""

from __future__ import annotations

import discord
import pytest
from discord.ext import commands
from discord.http import Route

from tests.fakediscord import FakeChannel, FakeDiscord, FakeGuild, FakeMember, Perm, Pings, run_bot


class PlainBot(commands.Bot):
    def __init__(self) -> None:
        super().__init__(command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0.05)
        self.deleted_channels: list[int] = []

    def text_channel(self, channel: FakeChannel) -> discord.TextChannel:
        found = self.get_channel(channel.id)
        assert isinstance(found, discord.TextChannel)
        return found

    async def on_guild_channel_delete(self, channel: discord.abc.GuildChannel) -> None:
        self.deleted_channels.append(channel.id)


async def test_everyone_and_role_pings_follow_allowed_mentions_and_permission(
    fake_discord: FakeDiscord, guild: FakeGuild, general: FakeChannel, alice: FakeMember
) -> None:
    artists = guild.add_role("Artists")  # not mentionable
    content = f"@everyone {artists.mention} {alice.mention} look"
    async with run_bot(fake_discord, PlainBot()) as bot:
        channel = bot.text_channel(general)
        without_permission = await channel.send(content)
        guild.bot_role.permissions |= Perm.MENTION_EVERYONE
        silenced = await channel.send(content, allowed_mentions=discord.AllowedMentions.none())
        allowed = await channel.send(
            content, allowed_mentions=discord.AllowedMentions(everyone=True, roles=True, users=False)
        )
        by_default = await channel.send(content)
    pings = [fake_discord.message(m.id).pings for m in (without_permission, silenced, allowed, by_default)]
    assert pings[0] == Pings(users=frozenset({alice.id}))
    assert pings[1] == Pings()
    assert pings[2] == Pings(roles=frozenset({artists.id}), everyone=True)
    assert pings[3] == Pings(users=frozenset({alice.id}), roles=frozenset({artists.id}), everyone=True)


async def test_interaction_replies_ping_only_users_by_default(
    fake_discord: FakeDiscord, guild: FakeGuild, general: FakeChannel, alice: FakeMember
) -> None:
    guild.bot_role.permissions |= Perm.MENTION_EVERYONE
    mentionable = guild.add_role("Pingable", mentionable=True)
    bot = PlainBot()

    @bot.tree.command()
    async def echo(interaction: discord.Interaction, text: str) -> None:
        """Echo text."""
        await interaction.response.send_message(text)

    async with run_bot(fake_discord, bot):
        prompt = f"@here {mentionable.mention} {alice.mention} a fox"
        interaction = await alice.run_command("echo", general, text=prompt)
        message = await interaction.wait_for_message()
    assert message.content == prompt
    assert message.pings == Pings(users=frozenset({alice.id}))


async def test_reply_pings_the_replied_author_unless_told_not_to(
    fake_discord: FakeDiscord, general: FakeChannel, alice: FakeMember
) -> None:
    original = await alice.send(general, "draw me a fox", dispatch=False)
    async with run_bot(fake_discord, PlainBot()) as bot:
        partial = bot.text_channel(general).get_partial_message(original.id)
        pinging = await partial.reply("here")
        quiet = await partial.reply("here", mention_author=False)
        missing = bot.text_channel(general).get_partial_message(1)
        with pytest.raises(discord.HTTPException) as refused:
            await missing.reply("to nothing")
        assert refused.value.code == 50035
        assert "message_reference" in refused.value.text
    stored = fake_discord.message(pinging.id)
    assert stored.referenced is original
    assert stored.pings.users == {alice.id}
    assert fake_discord.message(quiet.id).pings == Pings()


async def test_dm_channel_created_and_closed_dms_refused_50007(
    fake_discord: FakeDiscord, alice: FakeMember, bob: FakeMember
) -> None:
    bob.dms_open = False
    async with run_bot(fake_discord, PlainBot()) as bot:
        dm = await bot.create_dm(discord.Object(alice.id))
        await dm.send("your image is ready")
        closed = await bot.create_dm(discord.Object(bob.id))
        with pytest.raises(discord.Forbidden) as refused:
            await closed.send("hello?")
        assert refused.value.code == 50007
    channel = fake_discord.dm_channel(alice.user)
    assert channel.id == dm.id
    assert [m.content for m in channel.messages] == ["your image is ready"]


async def test_unknown_route_is_recorded(fake_discord: FakeDiscord, guild: FakeGuild) -> None:
    async with run_bot(fake_discord, PlainBot()) as bot:
        with pytest.raises(discord.NotFound) as refused:
            await bot.http.request(Route("GET", "/guilds/{guild_id}/bans", guild_id=guild.id))
        assert (refused.value.code, refused.value.text) == (0, "404: Not Found")
    assert fake_discord.unknown_routes == [f"GET /guilds/{guild.id}/bans"]
    fake_discord.unknown_routes.clear()  # the fixture fails any test that leaves one behind


async def test_unknown_message_channel_and_webhook(fake_discord: FakeDiscord, general: FakeChannel) -> None:
    async with run_bot(fake_discord, PlainBot()) as bot:
        with pytest.raises(discord.NotFound) as refused:
            await bot.text_channel(general).fetch_message(42)
        assert refused.value.code == 10008
        with pytest.raises(discord.NotFound) as refused:
            await bot.fetch_channel(42)
        assert refused.value.code == 10003
        webhook = Route("POST", "/webhooks/{webhook_id}/{webhook_token}", webhook_id=42, webhook_token="nope")
        with pytest.raises(discord.NotFound) as refused:
            await bot.http.request(webhook, json={"content": "hi"})
        assert refused.value.code == 10015


async def test_deleted_channel_is_announced_and_unknown_afterwards(fake_discord: FakeDiscord, guild: FakeGuild) -> None:
    doomed = guild.add_channel("doomed")
    async with run_bot(fake_discord, PlainBot()) as bot:
        channel = bot.text_channel(doomed)
        await fake_discord.delete_channel(doomed)
        await fake_discord.wait_for(lambda: bot.deleted_channels == [doomed.id])
        with pytest.raises(discord.NotFound) as refused:
            await channel.send("anyone?")
        assert refused.value.code == 10003


async def test_requests_are_recorded_with_route_and_auth(fake_discord: FakeDiscord, general: FakeChannel) -> None:
    async with run_bot(fake_discord, PlainBot()) as bot:
        await bot.text_channel(general).send("hi")
    (create,) = fake_discord.requests_to("POST /channels/{channel_id}/messages")
    assert (create.status, create.bot_auth, create.path) == (200, True, f"/api/v10/channels/{general.id}/messages")
    assert [r.key for r in fake_discord.requests][:2] == ["GET /users/@me", "GET /oauth2/applications/@me"]
