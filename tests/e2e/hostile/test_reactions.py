"""Reactions the bot must ignore (the bot's own 🔄, 👍, 🔄 off a result or on a running job) and one it must not."""

from __future__ import annotations

import pytest

from bot.emulator import Duration
from tests.chaos.verdict import DONE
from tests.e2e.conftest import reply_showing
from tests.e2e.hostile.support import ONE_IMAGE, Case, Play, World, no_pings
from tests.fakediscord import FakeMessage


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


CASES: dict[str, Case] = {
    "🔄 by the bot itself": Case(reroll_reaction_by_the_bot_itself),
    "👍 on a result": Case(reaction_with_another_emoji),
    "🔄 on a member's message": Case(reroll_reaction_on_a_members_message),
    "🔄 on a job still running": Case(reroll_reaction_on_a_job_still_running),
    "🔄 by another member": Case(reroll_reaction_by_another_member, ONE_IMAGE),
}


@pytest.mark.parametrize("name", list(CASES))
async def test_a_hostile_reaction_gets_its_answer_and_changes_nothing_else(play: Play, name: str) -> None:
    await play(CASES[name])
