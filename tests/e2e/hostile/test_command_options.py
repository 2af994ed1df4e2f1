"""Hostile /imagine options: empty, overlong and spoofing prompts, mentions, markdown; seeds and ratios out of range."""

from __future__ import annotations

import pytest

from tests.chaos.verdict import DONE
from tests.e2e.conftest import reply_showing
from tests.e2e.hostile.support import ONE_IMAGE, Case, Play, World, ephemeral_answer, no_pings
from tests.fakediscord import Perm

EMPTY = "The prompt is empty"
TOO_LONG = "the limit is 2,048"
BAD_SEED = "The seed must be a whole number from 0 to 2,147,483,647."
BAD_RATIO = "is not an aspect ratio"
BIDI_CONTROLS = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))}


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
}


@pytest.mark.parametrize("name", list(CASES))
async def test_a_hostile_option_gets_its_answer_and_changes_nothing_else(play: Play, name: str) -> None:
    await play(CASES[name])
