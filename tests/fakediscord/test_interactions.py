"""Interactions: the 3 s deadline, one acknowledgement, the 15 min token, components and modals."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands

from tests.fakediscord import FakeChannel, FakeDiscord, FakeGuild, FakeInteraction, FakeMember, Pings, run_bot


class RecordingTree(app_commands.CommandTree):
    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        self.client.errors.append(error)  # type: ignore[attr-defined]  # CommandBot has `errors`


class CommandBot(commands.Bot):
    """Syncs its app commands to one guild; records errors and the interactions it received."""

    def __init__(self, guild_id: int) -> None:
        super().__init__(
            command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0.05, tree_cls=RecordingTree
        )
        self.guild_id = guild_id
        self.errors: list[Exception] = []
        self.seen: list[discord.Interaction] = []
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def setup_hook(self) -> None:
        guild = discord.Object(self.guild_id)
        self.tree.copy_global_to(guild=guild)
        await self.tree.sync(guild=guild)

    def error_codes(self) -> list[int]:
        found = []
        for error in self.errors:
            original = getattr(error, "original", error)
            if isinstance(original, discord.HTTPException):
                found.append(original.code)
        return found


def ping_bot(guild: FakeGuild) -> CommandBot:
    bot = CommandBot(guild.id)

    @bot.tree.command()
    async def ping(interaction: discord.Interaction) -> None:
        """Answer pong."""
        await interaction.response.send_message("pong")

    return bot


async def test_command_answered_in_time(fake_discord: FakeDiscord, guild: FakeGuild, general: FakeChannel) -> None:
    async with run_bot(fake_discord, ping_bot(guild)):
        interaction = await guild.member("alice").run_command("ping", general)
        message = await interaction.wait_for_message()
        assert message.content == "pong"
        assert message.author is fake_discord.bot_user
        assert message.interaction is interaction
        assert (interaction.acked, interaction.failed, interaction.ack_type) == (True, False, 4)
        assert interaction.responses[0].status == 200  # dpy asks with_response=1
    assert fake_discord.failed_interactions == []


async def test_late_answer_fails_and_callback_is_refused_10062(
    fake_discord: FakeDiscord, guild: FakeGuild, general: FakeChannel, alice: FakeMember
) -> None:
    bot = CommandBot(guild.id)

    @bot.tree.command()
    async def slow(interaction: discord.Interaction) -> None:
        """Answer late."""
        bot.started.set()
        await bot.release.wait()
        await interaction.response.send_message("too late")

    async with run_bot(fake_discord, bot):
        interaction = await alice.run_command("slow", general)
        await fake_discord.wait_for(bot.started.is_set)
        fake_discord.clock.advance(3.5)
        assert interaction.failed
        assert fake_discord.failed_interactions == [interaction]
        bot.release.set()
        await fake_discord.wait_for(lambda: bot.errors)
        assert bot.error_codes() == [10062]
        assert interaction.responses[-1].error_code == 10062
    assert general.visible_messages() == []


async def test_unanswered_interaction_fails_by_the_background_timer(
    fake_discord: FakeDiscord, general: FakeChannel, alice: FakeMember
) -> None:
    interaction = await alice.run_command("ping", general)  # no bot connected: nobody answers
    fake_discord.clock.advance(2.9)
    assert not interaction.failed
    await fake_discord.wait_for(lambda: interaction.failed, timeout=2.0)  # the remaining 0.1 s of real time
    assert "no response within 3 s" in interaction.failed_reason


async def test_second_acknowledgement_is_refused_40060(
    fake_discord: FakeDiscord, guild: FakeGuild, general: FakeChannel, alice: FakeMember
) -> None:
    # Two deployments connected at once both answer the same interaction.
    first, second = ping_bot(guild), ping_bot(guild)
    async with run_bot(fake_discord, first), run_bot(fake_discord, second):
        interaction = await alice.run_command("ping", general)
        await fake_discord.wait_for(lambda: first.errors or second.errors)
        await fake_discord.wait_for(lambda: len(interaction.responses) == 2)
        assert first.error_codes() + second.error_codes() == [40060]
        assert [r.status for r in interaction.responses] == [200, 400]
    assert [m.content for m in general.visible_messages()] == ["pong"]


def defer_bot(guild: FakeGuild, *, ephemeral: bool = False) -> CommandBot:
    bot = CommandBot(guild.id)

    @bot.tree.command()
    async def work(interaction: discord.Interaction) -> None:
        """Defer, to answer later."""
        await interaction.response.defer(ephemeral=ephemeral)
        bot.seen.append(interaction)

    return bot


async def test_deferred_reply_edited_then_token_expires_50027_but_channel_edit_works(
    fake_discord: FakeDiscord, guild: FakeGuild, general: FakeChannel, alice: FakeMember
) -> None:
    bot = defer_bot(guild)
    async with run_bot(fake_discord, bot):
        interaction = await alice.run_command("work", general)
        await fake_discord.wait_for(lambda: bot.seen)
        assert interaction.original_message is not None
        assert interaction.original_message.loading
        await bot.seen[0].edit_original_response(content="done")
        message = await interaction.wait_for_message()
        assert message.content == "done"

        fake_discord.clock.advance(16 * 60)
        with pytest.raises(discord.HTTPException) as refused:
            await bot.seen[0].edit_original_response(content="too late")
        assert (refused.value.status, refused.value.code) == (401, 50027)
        assert interaction.responses[-1].error_code == 50027

        channel = bot.get_channel(general.id)
        assert isinstance(channel, discord.TextChannel)
        fetched = await channel.fetch_message(message.id)
        await fetched.edit(content="edited with the bot token")
        assert message.content == "edited with the bot token"
        assert [v.content for v in message.history] == ["", "done"]


async def test_expire_token_early(
    fake_discord: FakeDiscord, guild: FakeGuild, general: FakeChannel, alice: FakeMember
) -> None:
    bot = defer_bot(guild)
    async with run_bot(fake_discord, bot):
        interaction = await alice.run_command("work", general)
        await fake_discord.wait_for(lambda: bot.seen)
        fake_discord.expire_token_early(interaction)
        with pytest.raises(discord.HTTPException) as refused:
            await bot.seen[0].followup.send("result")
        assert refused.value.code == 50027


async def test_followup_after_defer_fills_the_thinking_message(
    fake_discord: FakeDiscord, guild: FakeGuild, general: FakeChannel, alice: FakeMember
) -> None:
    bot = defer_bot(guild, ephemeral=True)
    async with run_bot(fake_discord, bot):
        interaction = await alice.run_command("work", general)
        await fake_discord.wait_for(lambda: bot.seen)
        await bot.seen[0].followup.send("result")
        message = await interaction.wait_for_message()
        assert (message.content, message.ephemeral) == ("result", True)
        assert interaction.followups == [message]
        assert len([m for m in general.messages if not m.deleted]) == 1


async def test_a_followup_after_the_thinking_message_is_deleted_is_a_message_of_its_own(
    fake_discord: FakeDiscord, guild: FakeGuild, general: FakeChannel, alice: FakeMember
) -> None:
    bot = defer_bot(guild)  # public "thinking..."
    async with run_bot(fake_discord, bot):
        interaction = await alice.run_command("work", general)
        await fake_discord.wait_for(lambda: bot.seen)
        await bot.seen[0].delete_original_response()
        await bot.seen[0].followup.send("only for you", ephemeral=True)
        (answer,) = interaction.followups
        assert (answer.content, answer.ephemeral) == ("only for you", True)
        assert answer is not interaction.original_message
        assert general.visible_messages() == []


async def test_ephemeral_message_not_editable_by_channel_route_10008(
    fake_discord: FakeDiscord, guild: FakeGuild, general: FakeChannel, alice: FakeMember
) -> None:
    bot = CommandBot(guild.id)

    @bot.tree.command()
    async def secret(interaction: discord.Interaction) -> None:
        """Answer only to you."""
        await interaction.response.send_message("only you", ephemeral=True)

    async with run_bot(fake_discord, bot):
        interaction = await alice.run_command("secret", general)
        message = await interaction.wait_for_message()
        assert message.ephemeral
        assert interaction.ephemeral
        partial = bot.get_partial_messageable(general.id).get_partial_message(message.id)
        with pytest.raises(discord.NotFound) as refused:
            await partial.edit(content="changed")
        assert refused.value.code == 10008
    assert message.content == "only you"
    assert general.visible_messages() == []


class CountView(discord.ui.View):
    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="Count", custom_id="count")
    async def count(self, interaction: discord.Interaction, button: discord.ui.Button[CountView]) -> None:
        button.disabled = True
        await interaction.response.edit_message(content="clicked", view=self)


async def test_button_click_delivers_component_interaction_and_type_7_update(
    fake_discord: FakeDiscord, guild: FakeGuild, general: FakeChannel, alice: FakeMember
) -> None:
    bot = CommandBot(guild.id)

    @bot.tree.command()
    async def counter(interaction: discord.Interaction) -> None:
        """Show a button."""
        await interaction.response.send_message("click me", view=CountView())

    async with run_bot(fake_discord, bot):
        command = await alice.run_command("counter", general)
        message = await command.wait_for_message()
        button = message.component("count")
        assert button is not None
        assert (button["label"], button["disabled"]) == ("Count", False)
        click = await alice.click(message, "count")
        await click.wait_until_acked()
        assert (click.kind, click.ack_type, click.original_message) == ("component", 7, message)
        assert message.content == "clicked"
        assert message.buttons()[0]["disabled"] is True
        assert [v.content for v in message.history] == ["click me"]
        with pytest.raises(AssertionError, match="disabled"):
            await alice.click(message, "count")


class FeedbackModal(discord.ui.Modal, title="Feedback"):
    text: discord.ui.TextInput[FeedbackModal] = discord.ui.TextInput(label="Your feedback", custom_id="text")

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"thanks for: {self.text.value}")


async def test_modal_opened_then_submitted(
    fake_discord: FakeDiscord, guild: FakeGuild, general: FakeChannel, alice: FakeMember
) -> None:
    bot = CommandBot(guild.id)

    @bot.tree.command()
    async def feedback(interaction: discord.Interaction) -> None:
        """Open a modal."""
        await interaction.response.send_modal(FeedbackModal())

    async with run_bot(fake_discord, bot):
        opened = await alice.run_command("feedback", general)
        await opened.wait_until_acked()
        assert opened.ack_type == 9
        assert opened.modal is not None
        assert opened.modal["title"] == "Feedback"
        with pytest.raises(AssertionError, match="required"):
            await alice.submit_modal(opened, {})
        submitted = await alice.submit_modal(opened, {"text": "lovely"})
        message = await submitted.wait_for_message()
        assert submitted.kind == "modal"
        assert message.content == "thanks for: lovely"


async def _callback(
    fake: FakeDiscord, interaction: FakeInteraction, payload: dict[str, Any], *, with_response: bool = True
) -> tuple[int, Any]:
    """The callback as a raw client sends it (no Authorization header)."""
    url = f"{fake.rest_base}/interactions/{interaction.id}/{interaction.token}/callback"
    params = {"with_response": "true"} if with_response else {}
    async with aiohttp.ClientSession() as session, session.post(url, json=payload, params=params) as resp:
        body = await resp.json() if resp.content_type == "application/json" else None
        return resp.status, body


async def test_callback_types_are_checked_against_the_interaction(
    fake_discord: FakeDiscord, general: FakeChannel, alice: FakeMember
) -> None:
    command = await alice.run_command("ping", general)
    for payload, field in (
        ({"type": 6}, "type"),
        ({"type": 7, "data": {"content": "x"}}, "type"),
        ({"type": 5, "data": {"flags": 4}}, "data"),
        ({"type": 4, "data": {"content": "x" * 2001}}, "data"),
    ):
        status, body = await _callback(fake_discord, command, payload)
        assert (status, body["code"]) == (400, 50035), payload
        assert field in body["errors"], payload
    status, body = await _callback(fake_discord, command, {"type": 5, "data": {"flags": 64}})
    assert status == 200
    assert body["interaction"] == {
        "id": str(command.id),
        "type": 2,
        "response_message_id": str(command.original_message.id if command.original_message else 0),
        "response_message_loading": True,
        "response_message_ephemeral": True,
    }
    assert body["resource"] == {"type": 5}


async def test_modal_submit_cannot_open_a_modal_nor_update(
    fake_discord: FakeDiscord, general: FakeChannel, alice: FakeMember
) -> None:
    modal = {
        "custom_id": "m",
        "title": "Tell me",
        "components": [{"type": 1, "components": [{"type": 4, "custom_id": "a", "label": "A", "style": 1}]}],
    }
    opened = await alice.run_command("ask", general)
    assert (await _callback(fake_discord, opened, {"type": 9, "data": modal}))[0] == 200
    submitted = await alice.submit_modal("m", {"a": "answer"})
    assert submitted.data["components"][0]["components"][0]["value"] == "answer"
    for kind in (9, 6, 7):
        status, body = await _callback(fake_discord, submitted, {"type": kind, "data": modal})
        assert (status, body["code"]) == (400, 50035)
    assert await _callback(fake_discord, submitted, {"type": 4, "data": {"content": "ok"}}, with_response=False) == (
        204,
        None,
    )


async def test_wait_for_timeout_explains_the_state(fake_discord: FakeDiscord) -> None:
    with pytest.raises(AssertionError, match="#general"):
        await fake_discord.wait_for(lambda: False, timeout=0.05)


async def test_original_response_and_followups_by_token(
    fake_discord: FakeDiscord, guild: FakeGuild, general: FakeChannel, alice: FakeMember
) -> None:
    bot = CommandBot(guild.id)

    @bot.tree.command()
    async def steps(interaction: discord.Interaction) -> None:
        """Reply, follow up, tidy up."""
        await interaction.response.send_message("step 1")
        original = await interaction.original_response()
        followup = await interaction.followup.send("step 2", wait=True)
        await followup.edit(content="step 2, edited")
        await interaction.edit_original_response(content=f"step 1, edited ({original.id})")
        await followup.delete()
        bot.seen.append(interaction)

    async with run_bot(fake_discord, bot):
        interaction = await alice.run_command("steps", general)
        await fake_discord.wait_for(lambda: bot.seen)
        assert [r.route for r in interaction.responses] == [
            "callback",
            "get_message",
            "followup",
            "edit_message",
            "edit_message",
            "delete_message",
        ]
        original = interaction.original_message
        assert original is not None
        assert original.content == f"step 1, edited ({original.id})"
        (followup,) = interaction.followups
        assert followup.deleted
        assert followup.content == "step 2, edited"
        await bot.seen[0].delete_original_response()
        assert original.deleted
        assert general.visible_messages() == []


class PickView(discord.ui.View):
    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.select(
        custom_id="pick",
        options=[discord.SelectOption(label="A", value="a"), discord.SelectOption(label="B", value="b")],
    )
    async def pick(self, interaction: discord.Interaction, select: discord.ui.Select[PickView]) -> None:
        await interaction.response.defer()  # type 6 for a component
        await interaction.edit_original_response(content=f"picked {select.values[0]}", view=None)


async def test_select_with_deferred_update_edits_the_source_message(
    fake_discord: FakeDiscord, guild: FakeGuild, general: FakeChannel, alice: FakeMember
) -> None:
    bot = CommandBot(guild.id)

    @bot.tree.command()
    async def choose(interaction: discord.Interaction) -> None:
        """Offer a choice."""
        await interaction.response.send_message("choose", view=PickView())

    async with run_bot(fake_discord, bot):
        message = await (await alice.run_command("choose", general)).wait_for_message()
        with pytest.raises(AssertionError, match="not among the options"):
            await alice.select(message, "pick", ["z"])
        with pytest.raises(AssertionError, match="no component"):
            await alice.click(message, "missing")
        selected = await alice.select(message, "pick", ["b"])
        await fake_discord.wait_for(lambda: message.content == "picked b")
        assert (selected.ack_type, selected.original_message) == (6, message)
        assert message.components == []


async def test_deferred_reply_edited_with_an_image_and_embed(
    fake_discord: FakeDiscord, guild: FakeGuild, general: FakeChannel, alice: FakeMember
) -> None:
    bot = defer_bot(guild)
    async with run_bot(fake_discord, bot):
        interaction = await alice.run_command("work", general)
        await fake_discord.wait_for(lambda: bot.seen)
        embed = discord.Embed(title="a fox").set_image(url="attachment://fox.png")
        file = discord.File(io.BytesIO(b"\x89PNG not really"), "fox.png", description="a red fox")
        await bot.seen[0].edit_original_response(content=None, embed=embed, attachments=[file])
        message = await interaction.wait_for_message()
    (attachment,) = message.attachments
    assert (attachment.filename, attachment.description, attachment.data) == (
        "fox.png",
        "a red fox",
        b"\x89PNG not really",
    )
    assert message.embeds[0]["image"]["url"] == attachment.url
    assert message.pings == Pings()
