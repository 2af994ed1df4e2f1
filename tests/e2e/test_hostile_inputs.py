"""What members (and RunComfy's answers) can throw at the bot: one table, one answer per row, nothing else moves.

Each case does one hostile thing and checks two facts: the answer (an
ephemeral sentence, or a reply showing a clear final state) and the changes
it caused, counted as RunComfy submits, job rows and public messages. For a
refusal all three stay at zero. Cases that must make an image (a prompt that
is strange but valid) say so in their expected changes.

Discord validates option types, lengths and ranges against the registered
schema before an interaction exists, so no member can send an empty prompt,
10,000 characters or seed -1; the fake's `run_command` refuses them the same
way. Those rows send the raw interaction a modified client (or a Discord bug)
would produce, because the bot must not trust that check alone.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from bot.app import ImagineBot
from bot.emulator import Duration, Emulator, Fault
from bot.settings import Settings
from storage.sqlite import SQLiteJobStore
from tests.chaos.job_rows import read_jobs
from tests.chaos.verdict import DONE, FAILED
from tests.e2e.conftest import BotStarter, reply_showing
from tests.fakediscord import FakeChannel, FakeDiscord, FakeGuild, FakeInteraction, FakeMember, FakeMessage, Perm

EMPTY = "The prompt is empty"
TOO_LONG = "the limit is 2,048"
BAD_SEED = "The seed must be a whole number from 0 to 2,147,483,647."
BAD_RATIO = "is not an aspect ratio"
UNKNOWN_BUTTON = "That button belongs to an image I don't know (any more)."
NOT_OWNER = "Only the member who asked can cancel it."
ALREADY_FINISHED = "That job has already finished."
NOT_STARTED = "nothing was started"
NOT_DOWNLOADED = "The finished image could not be downloaded."
BIDI_CONTROLS = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))}
STRING, INTEGER = 3, 4


@dataclass(frozen=True)
class Changes:
    submits: int = 0
    jobs: int = 0
    messages: int = 0  # new public (non-ephemeral) messages in the guild


ONE_IMAGE = Changes(submits=1, jobs=1, messages=1)
BILLED_NO_IMAGE = Changes(submits=1, jobs=1, messages=1)  # RunComfy made it; the reply says why nobody sees it


@dataclass
class World:
    fake: FakeDiscord
    bot: ImagineBot
    emulator: Emulator
    settings: Settings
    guild: FakeGuild
    general: FakeChannel
    alice: FakeMember
    bob: FakeMember
    before: tuple[int, int, int] = (0, 0, 0)

    def counts(self) -> tuple[int, int, int]:
        # Deleted messages still count: what was posted was posted.
        public = sum(1 for channel in self.guild.channels.values() for m in channel.messages if not m.ephemeral)
        return len(self.emulator.submits), len(read_jobs(self.settings.database_path)), public

    def mark(self) -> None:
        """Everything before this was setting the scene; count changes from here."""
        self.before = self.counts()

    async def result(self, prompt: str = "a calm lake at dawn") -> FakeMessage:
        """A delivered image of alice's, to click and react on."""
        interaction = await self.alice.run_command("imagine", self.general, prompt=prompt)
        message = await reply_showing(self.fake, interaction, DONE)
        await self.fake.wait_for(lambda: all(row.state == "delivered" for row in self.rows()), 10)
        return message

    def rows(self) -> list[Any]:
        return read_jobs(self.settings.database_path)

    async def raw_command(self, **options: Any) -> FakeInteraction:
        """/imagine with options the Discord client would refuse to send (see the module docstring)."""
        command = self.fake.commands.find("imagine", self.guild.id)
        assert command is not None
        types = {"prompt": STRING, "aspect_ratio": STRING, "seed": INTEGER}
        data = {
            "id": str(command["id"]),
            "name": "imagine",
            "type": 1,
            "guild_id": str(self.guild.id),
            "options": [{"name": name, "type": types[name], "value": value} for name, value in options.items()],
        }
        interaction = FakeInteraction(
            self.fake, interaction_type=2, member=self.alice, channel=self.general, data=data, command_name="imagine"
        )
        return await self.fake.dispatch_interaction(interaction)


async def ephemeral_answer(interaction: FakeInteraction, text: str) -> None:
    answer = await interaction.wait_for_message(10)
    assert answer.ephemeral, answer.content
    assert text in answer.content, answer.content


def forge(message: FakeMessage, custom_id: str) -> None:
    """Put a button the bot never made on its message: all a modified client could ever click."""
    button = {"type": 2, "style": 2, "label": "forged", "custom_id": custom_id}
    message.current.components = [{"type": 1, "components": [button]}]


def no_pings(message: FakeMessage) -> None:
    pings = message.all_pings()
    assert not pings.everyone
    assert not pings.here
    assert not pings.roles
    assert not pings.users


# -- prompts --------------------------------------------------------------------------------------------------------


async def empty_prompt(w: World) -> None:
    await ephemeral_answer(await w.raw_command(prompt=""), EMPTY)


async def whitespace_only_prompt(w: World) -> None:
    await ephemeral_answer(await w.alice.run_command("imagine", w.general, prompt="   \t  "), EMPTY)


async def newlines_only_prompt(w: World) -> None:
    await ephemeral_answer(await w.alice.run_command("imagine", w.general, prompt="\n\n\n"), EMPTY)


async def zero_width_only_prompt(w: World) -> None:
    prompt = "\u200b\u200c\u200d\u2060\ufeff"
    await ephemeral_answer(await w.alice.run_command("imagine", w.general, prompt=prompt), EMPTY)


async def ten_thousand_character_prompt(w: World) -> None:
    await ephemeral_answer(await w.raw_command(prompt="a" * 10_000), TOO_LONG)


async def one_character_over_the_limit(w: World) -> None:
    await ephemeral_answer(await w.raw_command(prompt="b" * 2049), TOO_LONG)


async def prompt_at_the_limit(w: World) -> None:
    interaction = await w.alice.run_command("imagine", w.general, prompt="c" * 2048)
    reply = await reply_showing(w.fake, interaction, DONE)
    assert len(reply.content) <= 2000
    assert len(reply.embeds[0]["description"]) <= 4096
    assert w.emulator.submits_for("c" * 2048) == 1  # the prompt went upstream whole


async def right_to_left_override(w: World) -> None:
    prompt = "\u202egnp.exe a harmless cat"
    interaction = await w.alice.run_command("imagine", w.general, prompt=prompt)
    reply = await reply_showing(w.fake, interaction, DONE)
    shown = reply.content + str(reply.embeds[0].get("description"))
    assert not BIDI_CONTROLS & set(shown), "the prompt could reverse the bot's own words after it"
    assert "a harmless cat" in shown
    assert w.emulator.submits_for(prompt) == 1  # what the member typed is what RunComfy gets


async def emoji_only_prompt(w: World) -> None:
    interaction = await w.alice.run_command("imagine", w.general, prompt="🦊🔥🌊")
    reply = await reply_showing(w.fake, interaction, DONE)
    assert "🦊🔥🌊" in reply.content


async def everyone_and_here(w: World) -> None:
    w.guild.bot_role.permissions |= Perm.MENTION_EVERYONE  # only allowed_mentions stands between prompt and ping
    await w.fake.sync_guild(w.guild)
    w.mark()
    interaction = await w.alice.run_command("imagine", w.general, prompt="@everyone @here free nitro")
    no_pings(await reply_showing(w.fake, interaction, DONE))


async def role_mention(w: World) -> None:
    role = w.guild.add_role("Artists", mentionable=True)
    await w.fake.sync_guild(w.guild)
    w.mark()
    interaction = await w.alice.run_command("imagine", w.general, prompt=f"{role.mention} look at this")
    no_pings(await reply_showing(w.fake, interaction, DONE))


async def user_mention(w: World) -> None:
    interaction = await w.alice.run_command("imagine", w.general, prompt=f"{w.bob.mention} in a wizard hat")
    no_pings(await reply_showing(w.fake, interaction, DONE))


async def markdown_breakers(w: World) -> None:
    prompt = "```\n**bold** __under__ ~~gone~~ ||spoiler|| > quote\n# HEADING [click](https://evil.example)"
    interaction = await w.alice.run_command("imagine", w.general, prompt=prompt)
    reply = await reply_showing(w.fake, interaction, DONE)
    for text in (reply.content, reply.embeds[0]["description"]):
        assert "```" not in text.replace("\\`", "")
        assert "[click](" not in text.replace("\\[", "[").replace("\\]", "]").replace("\\(", "(") or "\\[" in text
        assert "||spoiler||" not in text
    assert reply.content.endswith(DONE)  # nothing the prompt opened swallowed the status


async def unclosed_code_fence(w: World) -> None:
    interaction = await w.alice.run_command("imagine", w.general, prompt="```py\nprint('hi')")
    reply = await reply_showing(w.fake, interaction, DONE)
    assert "```" not in reply.content
    assert reply.content.endswith(DONE)


# -- seeds and aspect ratios --------------------------------------------------------------------------------------


async def negative_seed(w: World) -> None:
    await ephemeral_answer(await w.raw_command(prompt="a fox", seed=-1), BAD_SEED)


async def seed_past_the_maximum(w: World) -> None:
    await ephemeral_answer(await w.raw_command(prompt="a fox", seed=2**31), BAD_SEED)


async def seed_of_thirty_digits(w: World) -> None:
    await ephemeral_answer(await w.raw_command(prompt="a fox", seed=10**30), BAD_SEED)


async def seed_that_is_text(w: World) -> None:
    await ephemeral_answer(await w.raw_command(prompt="a fox", seed="seven"), BAD_SEED)


async def seed_that_is_a_fraction(w: World) -> None:
    await ephemeral_answer(await w.raw_command(prompt="a fox", seed=1.5), BAD_SEED)


async def aspect_ratio_not_offered(w: World) -> None:
    await ephemeral_answer(await w.raw_command(prompt="a fox", aspect_ratio="5:4"), BAD_RATIO)


async def aspect_ratio_with_markdown(w: World) -> None:
    interaction = await w.raw_command(prompt="a fox", aspect_ratio="**1:1**`")
    await ephemeral_answer(interaction, BAD_RATIO)
    answer = interaction.original_message
    assert answer is not None
    assert "\\*\\*1:1\\*\\*" in answer.content


# -- buttons ------------------------------------------------------------------------------------------------------


async def custom_id_walking_paths(w: World) -> None:
    message = await w.result()
    w.mark()
    forge(message, "imagine:reroll:../../x")
    await ephemeral_answer(await w.alice.click(message, "imagine:reroll:../../x"), UNKNOWN_BUTTON)


async def custom_id_of_a_job_that_does_not_exist(w: World) -> None:
    message = await w.result()
    w.mark()
    forge(message, "imagine:reroll:999999")
    await ephemeral_answer(await w.alice.click(message, "imagine:reroll:999999"), UNKNOWN_BUTTON)


async def custom_id_of_another_message(w: World) -> None:
    first = await w.result("first")
    second = await w.result("second")
    w.mark()
    [first_id] = [c["custom_id"] for c in first.buttons() if c["custom_id"].startswith("imagine:reroll:")]
    forge(second, first_id)
    await ephemeral_answer(await w.alice.click(second, first_id), UNKNOWN_BUTTON)


async def custom_id_with_an_unknown_action(w: World) -> None:
    message = await w.result()
    w.mark()
    [job] = w.rows()
    forge(message, f"imagine:explode:{job.id}")
    await ephemeral_answer(await w.alice.click(message, f"imagine:explode:{job.id}"), UNKNOWN_BUTTON)


async def custom_id_of_ninety_digits(w: World) -> None:
    message = await w.result()
    w.mark()
    custom_id = "imagine:reroll:" + "9" * 85
    forge(message, custom_id)
    await ephemeral_answer(await w.alice.click(message, custom_id), UNKNOWN_BUTTON)


async def cancel_of_someone_elses_job(w: World) -> None:
    w.emulator.config.queue_time = Duration.constant(30.0)
    interaction = await w.alice.run_command("imagine", w.general, prompt="alice's slow queue")
    message = await reply_showing(w.fake, interaction, "Queued")
    w.mark()
    [job] = w.rows()
    await ephemeral_answer(await w.bob.click(message, f"imagine:cancel:{job.id}"), NOT_OWNER)
    assert "Queued" in message.content


async def cancel_of_a_finished_job(w: World) -> None:
    message = await w.result()
    w.mark()
    [job] = w.rows()
    forge(message, f"imagine:cancel:{job.id}")
    await ephemeral_answer(await w.alice.click(message, f"imagine:cancel:{job.id}"), ALREADY_FINISHED)
    assert [row.state for row in w.rows()] == ["delivered"]


async def reroll_of_a_message_deleted_meanwhile(w: World) -> None:
    message = await w.result()
    w.mark()
    [job] = w.rows()
    click = FakeInteraction(
        w.fake,
        interaction_type=3,
        member=w.alice,
        channel=w.general,
        data={"custom_id": f"imagine:reroll:{job.id}", "component_type": 2},
        source_message=message,
    )
    await w.fake.delete_message(message)  # a moderator, a moment after the click
    await w.fake.dispatch_interaction(click)
    await ephemeral_answer(click, "deleted")


# -- reactions ----------------------------------------------------------------------------------------------------


async def reroll_reaction_by_the_bot_itself(w: World) -> None:
    message = await w.result()
    w.mark()
    await w.fake.set_reaction(message, "🔄", w.fake.bot_user.id, add=True)


async def reaction_with_another_emoji(w: World) -> None:
    message = await w.result()
    w.mark()
    await w.bob.react(message, "👍")


async def reroll_reaction_on_a_members_message(w: World) -> None:
    plain = await w.alice.send(w.general, "just chatting")
    w.mark()
    await w.bob.react(plain, "🔄")


async def reroll_reaction_on_a_job_still_running(w: World) -> None:
    w.emulator.config.queue_time = Duration.constant(30.0)
    interaction = await w.alice.run_command("imagine", w.general, prompt="not finished yet")
    message = await reply_showing(w.fake, interaction, "Queued")
    w.mark()
    await w.bob.react(message, "🔄")


async def reroll_reaction_by_another_member(w: World) -> None:
    message = await w.result()
    w.mark()
    await w.bob.react(message, "🔄")

    def reroll() -> FakeMessage | None:
        return next((m for m in w.general.messages if m.referenced is message and DONE in m.content), None)

    rerolled = await w.fake.wait_for(reroll, 10)
    assert rerolled is not None
    assert w.bob.mention in rerolled.content
    no_pings(rerolled)


# -- what RunComfy hands back -------------------------------------------------------------------------------------


def failed_result(setup: Callable[[World], None]) -> Callable[[World], Awaitable[None]]:
    async def case(w: World) -> None:
        setup(w)
        interaction = await w.alice.run_command("imagine", w.general, prompt="a perfectly normal cat")
        reply = await reply_showing(w.fake, interaction, FAILED, within=20)
        assert NOT_DOWNLOADED in str(reply.embeds)
        assert not reply.attachments
        assert [row.state for row in w.rows()] == ["failed"]

    return case


def set_config(**values: Any) -> Callable[[World], None]:
    def setup(w: World) -> None:
        for name, value in values.items():
            setattr(w.emulator.config, name, value)

    return setup


def redirect_to(target: str) -> Callable[[World], None]:
    return set_config(result_kind="redirect", redirect_url=target)


def result_answer_pointing_at(url: str) -> Callable[[World], None]:
    """RunComfy's /result itself names the file elsewhere (a compromised or spoofed answer)."""

    def setup(w: World) -> None:
        body = {"request_id": "spoofed", "status": "succeeded", "output": {"images": [url]}}
        w.emulator.inject("result", Fault.http(200, body))

    return setup


# -- the database -------------------------------------------------------------------------------------------------


async def database_read_only(w: World) -> None:
    # Root ignores file modes; query_only makes SQLite refuse writes the way a read-only file does (SQLITE_READONLY).
    store = w.bot.store
    assert isinstance(store, SQLiteJobStore)  # these bots keep their jobs in a SQLite file
    await store._db.execute("PRAGMA query_only = ON")
    try:
        await ephemeral_answer(await w.alice.run_command("imagine", w.general, prompt="a locked-out fox"), NOT_STARTED)
    finally:
        await store._db.execute("PRAGMA query_only = OFF")


async def database_locked(w: World) -> None:
    holder = sqlite3.connect(w.settings.database_path, isolation_level=None, timeout=0.1)
    holder.execute("BEGIN IMMEDIATE")  # another writer (an operator's sqlite3 shell, say) holds the write lock
    try:
        interaction = await w.alice.run_command("imagine", w.general, prompt="a patient fox")
        await ephemeral_answer(interaction, NOT_STARTED)
        assert not interaction.failed, "the member must get an answer, not 'the application did not respond'"
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@dataclass(frozen=True)
class Case:
    act: Callable[[World], Awaitable[None]]
    changes: Changes = Changes()
    localhost_api: bool = False  # the bot reaches the emulator as "localhost", so 127.0.0.1 is not its API host


CASES: dict[str, Case] = {
    "empty prompt": Case(empty_prompt),
    "whitespace-only prompt": Case(whitespace_only_prompt),
    "newlines-only prompt": Case(newlines_only_prompt),
    "zero-width-only prompt": Case(zero_width_only_prompt),
    "10,000-character prompt": Case(ten_thousand_character_prompt),
    "2,049-character prompt": Case(one_character_over_the_limit),
    "2,048-character prompt": Case(prompt_at_the_limit, ONE_IMAGE),
    "right-to-left override": Case(right_to_left_override, ONE_IMAGE),
    "emoji-only prompt": Case(emoji_only_prompt, ONE_IMAGE),
    "@everyone and @here": Case(everyone_and_here, ONE_IMAGE),
    "role mention": Case(role_mention, ONE_IMAGE),
    "user mention": Case(user_mention, ONE_IMAGE),
    "markdown breakers": Case(markdown_breakers, ONE_IMAGE),
    "unclosed code fence": Case(unclosed_code_fence, ONE_IMAGE),
    "seed -1": Case(negative_seed),
    "seed 2**31": Case(seed_past_the_maximum),
    "seed of 30 digits": Case(seed_of_thirty_digits),
    "seed that is text": Case(seed_that_is_text),
    "seed 1.5": Case(seed_that_is_a_fraction),
    "aspect ratio not offered": Case(aspect_ratio_not_offered),
    "aspect ratio with markdown": Case(aspect_ratio_with_markdown),
    "custom_id imagine:reroll:../../x": Case(custom_id_walking_paths),
    "custom_id of a job that does not exist": Case(custom_id_of_a_job_that_does_not_exist),
    "custom_id of another message's job": Case(custom_id_of_another_message),
    "custom_id with an unknown action": Case(custom_id_with_an_unknown_action),
    "custom_id of 85 digits": Case(custom_id_of_ninety_digits),
    "cancel of someone else's job": Case(cancel_of_someone_elses_job),
    "cancel of a finished job": Case(cancel_of_a_finished_job),
    "reroll of a message deleted meanwhile": Case(reroll_of_a_message_deleted_meanwhile),
    "🔄 by the bot itself": Case(reroll_reaction_by_the_bot_itself),
    "👍 on a result": Case(reaction_with_another_emoji),
    "🔄 on a member's message": Case(reroll_reaction_on_a_members_message),
    "🔄 on a job still running": Case(reroll_reaction_on_a_job_still_running),
    "🔄 by another member": Case(reroll_reaction_by_another_member, ONE_IMAGE),
    "result is HTML": Case(failed_result(set_config(result_kind="html")), BILLED_NO_IMAGE),
    "result is an empty file": Case(failed_result(set_config(result_kind="empty")), BILLED_NO_IMAGE),
    "result is a 200 MB stream": Case(
        failed_result(set_config(result_kind="huge", huge_bytes=200 * 1024 * 1024, huge_content_length=False)),
        BILLED_NO_IMAGE,
    ),
    "result declares 200 MB": Case(
        failed_result(set_config(result_kind="huge", huge_bytes=200 * 1024 * 1024)), BILLED_NO_IMAGE
    ),
    "result is a truncated PNG": Case(failed_result(set_config(result_kind="truncated")), BILLED_NO_IMAGE),
    "result is a decompression bomb": Case(failed_result(set_config(result_kind="bomb")), BILLED_NO_IMAGE),
    "result redirects to 127.0.0.1": Case(failed_result(lambda w: None), BILLED_NO_IMAGE, localhost_api=True),
    "result redirects to 10.0.0.1": Case(failed_result(redirect_to("http://10.0.0.1/x.png")), BILLED_NO_IMAGE),
    "result redirects to 169.254.169.254": Case(
        failed_result(redirect_to("http://169.254.169.254/latest/meta-data/")), BILLED_NO_IMAGE
    ),
    "result redirects to [::1]": Case(failed_result(redirect_to("http://[::1]:9/x.png")), BILLED_NO_IMAGE),
    "result redirects to a non-allowlisted host": Case(
        failed_result(redirect_to("https://cdn.evil.example/x.png")), BILLED_NO_IMAGE
    ),
    "result on a non-allowlisted host": Case(
        failed_result(result_answer_pointing_at("https://cdn.evil.example/x.png")), BILLED_NO_IMAGE
    ),
    "result on a private address": Case(
        failed_result(result_answer_pointing_at("http://192.168.1.1/x.png")), BILLED_NO_IMAGE
    ),
    "database read-only": Case(database_read_only),
    "database locked": Case(database_locked),
}


@pytest.mark.parametrize("name", list(CASES))
async def test_hostile_input_gets_its_answer_and_changes_nothing_else(
    fake_discord: FakeDiscord,
    start_bot: BotStarter,
    emulator: Emulator,
    settings: Settings,
    guild: FakeGuild,
    general: FakeChannel,
    alice: FakeMember,
    bob: FakeMember,
    name: str,
) -> None:
    case = CASES[name]
    emulator.config.queue_time = Duration.constant(0.05)  # quick jobs: the table is long
    emulator.config.run_time = Duration.constant(0.1)
    overrides: dict[str, Any] = {}
    if case.localhost_api:
        port = emulator.url.rsplit(":", 1)[1]
        overrides["runcomfy_base_url"] = f"http://localhost:{port}"
        emulator.config.file_base_url = f"http://localhost:{port}"
        emulator.config.result_kind = "redirect"
        emulator.config.redirect_url = f"http://127.0.0.1:{port}/files/elsewhere.png"
    async with start_bot(**overrides) as bot:
        world = World(fake_discord, bot, emulator, settings, guild, general, alice, bob)
        world.mark()
        await case.act(world)
        await asyncio.sleep(0.2)  # room for anything the bot might still do
        submits, jobs, messages = (after - before for after, before in zip(world.counts(), world.before, strict=True))
    assert Changes(submits, jobs, messages) == case.changes
    assert not fake_discord.failed_interactions


def test_the_table_has_at_least_thirty_named_cases() -> None:
    assert len(CASES) >= 30
