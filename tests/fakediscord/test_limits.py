"""Message limits: content, embeds, components, files and the per-guild upload limit."""

from __future__ import annotations

import io
from typing import Any

import discord
import pytest
from discord.ext import commands
from discord.http import Route
from PIL import Image

from tests.fakediscord import FakeChannel, FakeDiscord, FakeGuild, FakeMember, run_bot

MIB = 1024 * 1024


class PlainBot(commands.Bot):
    def __init__(self) -> None:
        super().__init__(command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0.05)

    def text_channel(self, channel: FakeChannel) -> discord.TextChannel:
        found = self.get_channel(channel.id)
        assert isinstance(found, discord.TextChannel)
        return found


def png(width: int = 3, height: int = 2) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "red").save(buffer, format="PNG")
    return buffer.getvalue()


async def _refused(coro: Any) -> discord.HTTPException:
    with pytest.raises(discord.HTTPException) as refused:
        await coro
    return refused.value


async def test_content_over_2000_refused_50035(fake_discord: FakeDiscord, general: FakeChannel) -> None:
    async with run_bot(fake_discord, PlainBot()) as bot:
        channel = bot.text_channel(general)
        error = await _refused(channel.send("x" * 2001))
        assert (error.status, error.code) == (400, 50035)
        assert "In content: Must be 2000 or fewer in length." in error.text
        await channel.send("x" * 2000)
    assert [len(m.content) for m in general.messages] == [2000]


@pytest.mark.parametrize(
    ("embeds", "field"),
    [
        ([{"title": "t" * 257}], "embeds.0.title"),
        ([{"description": "d" * 4097}], "embeds.0.description"),
        ([{"fields": [{"name": "n", "value": "v"}] * 26}], "embeds.0.fields"),
        ([{"fields": [{"name": "n" * 257, "value": "v"}]}], "embeds.0.fields.0.name"),
        ([{"fields": [{"name": "n", "value": "v" * 1025}]}], "embeds.0.fields.0.value"),
        ([{"footer": {"text": "f" * 2049}}], "embeds.0.footer.text"),
        ([{"author": {"name": "a" * 257}}], "embeds.0.author.name"),
        ([{"description": "d" * 3001}, {"description": "d" * 3000}], "In embeds: Embed size exceeds"),
        ([{"title": "t"}] * 11, "In embeds: Must be 10 or fewer"),
    ],
)
async def test_embed_limits_refused_naming_the_field(
    fake_discord: FakeDiscord, general: FakeChannel, embeds: list[dict[str, Any]], field: str
) -> None:
    async with run_bot(fake_discord, PlainBot()) as bot:
        route = Route("POST", "/channels/{channel_id}/messages", channel_id=general.id)
        error = await _refused(bot.http.request(route, json={"embeds": embeds}))
        assert (error.status, error.code) == (400, 50035)
        assert field in error.text
    assert general.messages == []


@pytest.mark.parametrize(
    ("components", "field"),
    [
        ([{"type": 1, "components": [{"type": 2, "style": 1, "label": "x", "custom_id": "c" * 101}]}], "custom_id"),
        ([{"type": 1, "components": [{"type": 2, "style": 1, "label": "l" * 81, "custom_id": "c"}]}], "label"),
        (
            [
                {
                    "type": 1,
                    "components": [{"type": 2, "style": 1, "label": "x", "custom_id": f"c{i}"} for i in range(6)],
                }
            ],
            "components.0.components",
        ),
        (
            [
                {"type": 1, "components": [{"type": 2, "style": 1, "label": "x", "custom_id": f"r{i}"}]}
                for i in range(6)
            ],
            "In components: Must be 5",
        ),
        (
            [{"type": 1, "components": [{"type": 2, "style": 1, "label": "x", "custom_id": "same"}] * 2}],
            "cannot be duplicated",
        ),
    ],
)
async def test_component_limits_refused(
    fake_discord: FakeDiscord, general: FakeChannel, components: list[dict[str, Any]], field: str
) -> None:
    async with run_bot(fake_discord, PlainBot()) as bot:
        route = Route("POST", "/channels/{channel_id}/messages", channel_id=general.id)
        error = await _refused(bot.http.request(route, json={"content": "hi", "components": components}))
        assert (error.status, error.code) == (400, 50035)
        assert field in error.text


async def test_custom_id_over_100_refused_from_a_view(fake_discord: FakeDiscord, general: FakeChannel) -> None:
    view = discord.ui.View()
    view.add_item(discord.ui.Button(label="Reroll", custom_id="imagine:reroll:" + "9" * 86))
    async with run_bot(fake_discord, PlainBot()) as bot:
        error = await _refused(bot.text_channel(general).send("result", view=view))
        assert error.code == 50035
        assert "components.0.components.0.custom_id" in error.text


async def test_file_over_the_guild_limit_refused_40005_and_the_limit_follows_the_tier(
    fake_discord: FakeDiscord, general: FakeChannel
) -> None:
    boosted = fake_discord.add_guild("Boosted", premium_tier=2)
    lounge = boosted.add_channel("lounge")
    data = b"\0" * (10 * MIB + 1)
    async with run_bot(fake_discord, PlainBot()) as bot:
        error = await _refused(bot.text_channel(general).send(file=discord.File(io.BytesIO(data), "big.bin")))
        assert (error.status, error.code) == (413, 40005)
        await bot.text_channel(lounge).send(file=discord.File(io.BytesIO(data), "big.bin"))
        seen = bot.get_guild(boosted.id)
        assert seen is not None
        assert seen.filesize_limit == boosted.upload_limit == 50 * MIB
    assert [a.size for a in lounge.messages[0].attachments] == [len(data)]
    assert general.messages == []


async def test_upload_limit_is_configurable_and_sent_with_interactions(fake_discord: FakeDiscord) -> None:
    small = fake_discord.add_guild("Small", premium_tier=3, upload_limit=1000)
    channel = small.add_channel("files")
    member = small.add_member("carol")
    bot = PlainBot()
    limits: list[int] = []

    @bot.tree.command()
    async def upload(interaction: discord.Interaction) -> None:
        """Send a file."""
        limits.append(interaction.filesize_limit)
        await interaction.response.send_message(file=discord.File(io.BytesIO(b"x" * 1001), "a.bin"))

    async with run_bot(fake_discord, bot):
        interaction = await member.run_command("upload", channel)
        await fake_discord.wait_for(lambda: interaction.responses)
        assert limits == [1000]
        assert interaction.responses[0].error_code == 40005


async def test_attachment_count_over_10_refused(fake_discord: FakeDiscord, general: FakeChannel) -> None:
    async with run_bot(fake_discord, PlainBot()) as bot:
        form: list[dict[str, Any]] = [{"name": "payload_json", "value": '{"content": "many"}'}]
        form += [
            {"name": f"files[{i}]", "value": b"x", "filename": f"{i}.txt", "content_type": "text/plain"}
            for i in range(11)
        ]
        route = Route("POST", "/channels/{channel_id}/messages", channel_id=general.id)
        error = await _refused(bot.http.request(route, form=form))
        assert error.code == 50035
        assert "attachments" in error.text


async def test_attachment_reference_in_embed_must_name_an_uploaded_file(
    fake_discord: FakeDiscord, general: FakeChannel
) -> None:
    async with run_bot(fake_discord, PlainBot()) as bot:
        channel = bot.text_channel(general)
        embed = discord.Embed(title="Result").set_image(url="attachment://missing.png")
        error = await _refused(channel.send(embed=embed, file=discord.File(io.BytesIO(png()), "result.png")))
        assert error.code == 50035
        assert "embeds.0.image.url" in error.text
        embed.set_image(url="attachment://result.png")
        sent = await channel.send(embed=embed, file=discord.File(io.BytesIO(png()), "result.png", description="a fox"))
        assert sent.embeds[0].image.url is not None
        assert sent.embeds[0].image.url.endswith("/result.png")
        assert await sent.attachments[0].read() == png()
    (attachment,) = general.messages[0].attachments
    assert (attachment.filename, attachment.content_type, attachment.description) == (
        "result.png",
        "image/png",
        "a fox",
    )
    assert (attachment.width, attachment.height) == (3, 2)


async def test_edit_keeps_only_listed_attachments(fake_discord: FakeDiscord, general: FakeChannel) -> None:
    async with run_bot(fake_discord, PlainBot()) as bot:
        sent = await bot.text_channel(general).send(
            files=[discord.File(io.BytesIO(png()), "a.png"), discord.File(io.BytesIO(b"b"), "b.txt")]
        )
        stored = fake_discord.message(sent.id)
        first_id = stored.attachments[0].id
        await sent.edit(attachments=[sent.attachments[0]])
        assert [a.filename for a in stored.attachments] == ["a.png"]
        await sent.edit(attachments=[sent.attachments[0], discord.File(io.BytesIO(png(5, 5)), "c.png")])
        assert [a.filename for a in stored.attachments] == ["a.png", "c.png"]
        assert stored.attachments[0].id == first_id
        await sent.edit(content="no files listed means keep them")
        assert [a.filename for a in stored.attachments] == ["a.png", "c.png"]
        await sent.edit(attachments=[])
        assert stored.attachments == []
    assert [[a.filename for a in v.attachments] for v in stored.history] == [
        ["a.png", "b.txt"],
        ["a.png"],
        ["a.png", "c.png"],
        ["a.png", "c.png"],
    ]


async def test_empty_message_refused(fake_discord: FakeDiscord, general: FakeChannel) -> None:
    async with run_bot(fake_discord, PlainBot()) as bot:
        route = Route("POST", "/channels/{channel_id}/messages", channel_id=general.id)
        error = await _refused(bot.http.request(route, json={"content": ""}))
        assert error.code == 50006


async def test_member_cannot_pass_a_value_outside_the_synced_choices(
    fake_discord: FakeDiscord, guild: FakeGuild, general: FakeChannel, alice: FakeMember
) -> None:
    fake_discord.commands.bulk_overwrite(
        guild.id,
        [
            {
                "name": "imagine",
                "description": "Draw",
                "options": [
                    {"type": 3, "name": "ratio", "description": "r", "choices": [{"name": "wide", "value": "16:9"}]}
                ],
            }
        ],
    )
    with pytest.raises(AssertionError, match="not one of"):
        await alice.run_command("imagine", general, ratio="4:3")
    interaction = await alice.run_command("imagine", general, ratio="16:9")
    assert interaction.data["options"] == [{"name": "ratio", "type": 3, "value": "16:9"}]


async def test_components_v2_are_capped_at_40(fake_discord: FakeDiscord, general: FakeChannel) -> None:
    texts = [{"type": 10, "content": f"line {i}"} for i in range(41)]
    async with run_bot(fake_discord, PlainBot()) as bot:
        route = Route("POST", "/channels/{channel_id}/messages", channel_id=general.id)
        error = await _refused(bot.http.request(route, json={"flags": 1 << 15, "components": texts}))
        assert error.code == 50035
        assert "Must be 40 or fewer" in error.text
        await bot.http.request(route, json={"flags": 1 << 15, "components": texts[:40]})
    assert len(general.messages[0].components) == 40
