"""Attachments as Discord hands them out: signed links that die after a day, several files in one request, and the
message context menu that brings a message's attachments to the bot."""

from __future__ import annotations

import asyncio
import io
from urllib.parse import parse_qs, urlsplit

import aiohttp
import discord
import pytest
from discord import app_commands

from tests.fakediscord import CDN_ROUTE, FakeChannel, FakeDiscord, FakeMember, run_bot
from tests.fakediscord.test_limits import MIB, PlainBot, _refused, png


async def status_of(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status


async def test_links_are_signed_and_die_after_a_day(fake_discord: FakeDiscord, general: FakeChannel) -> None:
    async with run_bot(fake_discord, PlainBot()) as bot:
        message = await bot.text_channel(general).send(file=discord.File(io.BytesIO(png()), "a.png"))
        url = message.attachments[0].url
        query = parse_qs(urlsplit(url).query)
        assert set(query) == {"ex", "is", "hm"}
        assert int(query["ex"][0], 16) - int(query["is"][0], 16) == 24 * 3600
        assert await status_of(url) == 200
        assert await status_of(url.split("?")[0]) == 404  # unsigned
        assert await status_of(url.replace("hm=", "hm=0")) == 404  # forged
        fake_discord.clock.advance(24 * 3600 + 1)
        assert await status_of(url) == 404
        fresh = await bot.text_channel(general).fetch_message(message.id)
        assert fresh.attachments[0].url != url
        assert await status_of(fresh.attachments[0].url) == 200  # a new payload, a new link


async def test_ten_files_in_one_message_but_not_eleven_nor_more_than_25_mib(
    fake_discord: FakeDiscord, general: FakeChannel
) -> None:
    async with run_bot(fake_discord, PlainBot()) as bot:
        channel = bot.text_channel(general)
        await channel.send(files=[discord.File(io.BytesIO(png()), f"{n}.png") for n in range(10)])
        data = b"\0" * (7 * MIB)
        error = await _refused(channel.send(files=[discord.File(io.BytesIO(data), f"{n}.bin") for n in range(4)]))
        assert (error.status, error.code) == (413, 40005)  # each under 10 MiB, together over 25
    assert [len(m.attachments) for m in general.messages] == [10]


async def test_a_message_command_brings_the_message_and_its_attachments(
    fake_discord: FakeDiscord, general: FakeChannel, alice: FakeMember
) -> None:
    seen: list[discord.Message] = []
    bot = PlainBot()

    @app_commands.context_menu(name="Look")
    async def look(interaction: discord.Interaction, message: discord.Message) -> None:
        seen.append(message)
        await interaction.response.send_message("seen", ephemeral=True)

    bot.tree.add_command(look)
    posted = await alice.send(general, "look at this", dispatch=False)
    async with run_bot(fake_discord, bot) as running:
        await running.tree.sync()
        with pytest.raises(AssertionError, match="no message command"):
            await alice.run_message_command("Nope", posted)
        interaction = await alice.run_message_command("Look", posted)
        await interaction.wait_until_acked()
    assert [message.id for message in seen] == [posted.id]
    assert seen[0].content == "look at this"


async def test_a_held_download_waits_until_released(fake_discord: FakeDiscord, general: FakeChannel) -> None:
    async with run_bot(fake_discord, PlainBot()) as bot:
        message = await bot.text_channel(general).send(file=discord.File(io.BytesIO(png()), "a.png"))
        with fake_discord.hold(f"GET {CDN_ROUTE}") as held:
            download = asyncio.create_task(status_of(message.attachments[0].url))
            await fake_discord.wait_for(lambda: held.waiting)
            assert not download.done()
            held.release()
            assert await download == 200
