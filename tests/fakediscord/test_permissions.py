"""Channel permissions computed like Discord's, and the errors for what the bot may not do."""

from __future__ import annotations

import io

import discord
import pytest
from discord.ext import commands

from tests.fakediscord import FakeChannel, FakeDiscord, FakeGuild, FakeMember, Overwrite, Perm, run_bot


class PlainBot(commands.Bot):
    def __init__(self) -> None:
        super().__init__(command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0.05)
        self.errors: list[Exception] = []

    def text_channel(self, channel: FakeChannel) -> discord.TextChannel:
        found = self.get_channel(channel.id)
        assert isinstance(found, discord.TextChannel)
        return found


def test_overwrites_resolve_like_discord(guild: FakeGuild) -> None:
    alice, moderator = guild.member("alice"), guild.member("moderator")
    mods = moderator.roles[0]
    admins = guild.add_role("Admins", Perm.ADMINISTRATOR)
    channel = guild.add_channel(
        "locked",
        overwrites=[
            Overwrite(guild.everyone, deny=Perm.SEND_MESSAGES),
            Overwrite(mods, allow=Perm.SEND_MESSAGES),
            Overwrite(alice, allow=Perm.SEND_MESSAGES | Perm.EMBED_LINKS),
        ],
    )
    assert not guild.bot_member.permissions_in(channel) & Perm.SEND_MESSAGES
    assert guild.member("bob").permissions_in(channel) & Perm.EMBED_LINKS == 0  # implied by no SEND_MESSAGES
    assert moderator.permissions_in(channel) & Perm.SEND_MESSAGES
    assert alice.permissions_in(channel) & Perm.SEND_MESSAGES
    channel.set_overwrite(alice, deny=Perm.VIEW_CHANNEL)
    assert alice.permissions_in(channel) == 0
    alice.roles.append(admins)
    assert alice.permissions_in(channel) & Perm.MANAGE_GUILD


@pytest.mark.parametrize(
    ("denied", "send_kwargs", "status", "code"),
    [
        (Perm.SEND_MESSAGES, {"content": "hi"}, 403, 50013),
        (Perm.ATTACH_FILES, {"file": "file"}, 403, 50013),
        (Perm.EMBED_LINKS, {"embed": discord.Embed(title="t")}, 403, 50013),
        (Perm.VIEW_CHANNEL, {"content": "hi"}, 403, 50001),
    ],
)
async def test_channel_send_needs_permissions(
    fake_discord: FakeDiscord,
    guild: FakeGuild,
    general: FakeChannel,
    denied: Perm,
    send_kwargs: dict[str, object],
    status: int,
    code: int,
) -> None:
    if send_kwargs.get("file") == "file":
        send_kwargs = {"file": discord.File(io.BytesIO(b"data"), "a.txt")}
    async with run_bot(fake_discord, PlainBot()) as bot:
        channel = bot.text_channel(general)
        general.set_overwrite(guild.bot_role, deny=denied)
        with pytest.raises(discord.HTTPException) as refused:
            await channel.send(**send_kwargs)  # type: ignore[call-overload]  # parametrized kwargs
        assert (refused.value.status, refused.value.code) == (status, code)
        general.set_overwrite(guild.bot_role)
        await channel.send("allowed again")
    assert [m.content for m in general.messages] == ["allowed again"]


async def test_fetching_a_hidden_channel_is_missing_access(
    fake_discord: FakeDiscord, guild: FakeGuild, general: FakeChannel
) -> None:
    general.set_overwrite(guild.everyone, deny=Perm.VIEW_CHANNEL)
    async with run_bot(fake_discord, PlainBot()) as bot:
        with pytest.raises(discord.Forbidden) as refused:
            await bot.fetch_channel(general.id)
        assert refused.value.code == 50001


def reply_bot(guild: FakeGuild, **reply: object) -> PlainBot:
    bot = PlainBot()

    @bot.tree.command()
    async def show(interaction: discord.Interaction) -> None:
        """Reply with an embed or file."""
        try:
            await interaction.response.send_message("result", **reply)  # type: ignore[call-overload]  # test kwargs
        except discord.HTTPException as exc:
            bot.errors.append(exc)

    return bot


async def test_interaction_reply_loses_embeds_without_embed_links(
    fake_discord: FakeDiscord, guild: FakeGuild, general: FakeChannel, alice: FakeMember
) -> None:
    general.set_overwrite(guild.bot_role, deny=Perm.EMBED_LINKS)
    async with run_bot(fake_discord, reply_bot(guild, embed=discord.Embed(title="lost"))):
        interaction = await alice.run_command("show", general)
        message = await interaction.wait_for_message()
        assert (message.content, message.embeds) == ("result", [])


async def test_interaction_reply_file_needs_attach_files(
    fake_discord: FakeDiscord, guild: FakeGuild, general: FakeChannel, alice: FakeMember
) -> None:
    general.set_overwrite(guild.bot_role, deny=Perm.ATTACH_FILES)
    bot = reply_bot(guild, file=discord.File(io.BytesIO(b"png"), "a.png"))
    async with run_bot(fake_discord, bot):
        interaction = await alice.run_command("show", general)
        await fake_discord.wait_for(lambda: bot.errors)
        assert [getattr(e, "code", None) for e in bot.errors] == [50013]
        assert not interaction.acked


async def test_interaction_reply_needs_no_send_messages(
    fake_discord: FakeDiscord, guild: FakeGuild, general: FakeChannel, alice: FakeMember
) -> None:
    general.set_overwrite(guild.bot_role, deny=Perm.SEND_MESSAGES)
    async with run_bot(fake_discord, reply_bot(guild)):
        interaction = await alice.run_command("show", general)
        assert (await interaction.wait_for_message()).content == "result"


async def test_editing_or_deleting_another_authors_message(
    fake_discord: FakeDiscord, guild: FakeGuild, general: FakeChannel, alice: FakeMember
) -> None:
    theirs = await alice.send(general, "mine", dispatch=False)
    async with run_bot(fake_discord, PlainBot()) as bot:
        partial = bot.text_channel(general).get_partial_message(theirs.id)
        with pytest.raises(discord.Forbidden) as refused:
            await partial.edit(content="hijacked")
        assert refused.value.code == 50005
        with pytest.raises(discord.Forbidden) as refused:
            await partial.delete()
        assert refused.value.code == 50013
        guild.bot_role.permissions |= Perm.MANAGE_MESSAGES
        await partial.delete()
    assert theirs.deleted
    assert theirs.content == "mine"


async def test_reactions_need_permissions_and_stop_at_20_distinct(
    fake_discord: FakeDiscord, guild: FakeGuild, general: FakeChannel, alice: FakeMember
) -> None:
    message = await alice.send(general, "react", dispatch=False)
    await alice.react(message, "👍")
    async with run_bot(fake_discord, PlainBot()) as bot:
        partial = bot.text_channel(general).get_partial_message(message.id)
        general.set_overwrite(guild.bot_role, deny=Perm.ADD_REACTIONS)
        with pytest.raises(discord.Forbidden) as refused:
            await partial.add_reaction("🔄")
        assert refused.value.code == 50013
        await partial.add_reaction("👍")  # joining an existing reaction needs only READ_MESSAGE_HISTORY
        with pytest.raises(discord.Forbidden) as refused:
            await partial.remove_reaction("👍", discord.Object(alice.id))  # someone else's: MANAGE_MESSAGES
        assert refused.value.code == 50013
        general.set_overwrite(guild.bot_role, deny=Perm.READ_MESSAGE_HISTORY)
        with pytest.raises(discord.Forbidden) as refused:
            await partial.add_reaction("👍")
        assert refused.value.code == 50013
        general.set_overwrite(guild.bot_role)
        for emoji in "😀😁😂🤣😃😄😅😆😉😊😋😎😍😘🥰😗😙😚🙂":
            await alice.react(message, emoji)
        with pytest.raises(discord.HTTPException) as too_many:
            await partial.add_reaction("🔄")
        assert too_many.value.code == 30010
    assert message.reaction_users("👍") == {alice.id, fake_discord.bot_user.id}
    assert len(message.reactions) == 20
