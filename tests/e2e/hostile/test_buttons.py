"""Hostile clicks: forged custom_ids, cancelling a job of another member or a finished one, a deleted reply."""

from __future__ import annotations

import pytest

from bot.emulator import Duration
from tests.e2e.conftest import reply_showing
from tests.e2e.hostile.support import Case, Play, World, ephemeral_answer
from tests.fakediscord import FakeInteraction, FakeMessage

UNKNOWN_BUTTON = "That button belongs to an image I don't know (any more)."
NOT_OWNER = "Only the member who asked can cancel it."
ALREADY_FINISHED = "That job has already finished."


def forge(message: FakeMessage, custom_id: str) -> None:
    """Put a button the bot never made on its message: all a modified client could ever click."""
    button = {"type": 2, "style": 2, "label": "forged", "custom_id": custom_id}
    message.current.components = [{"type": 1, "components": [button]}]


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


CASES: dict[str, Case] = {
    "custom_id imagine:reroll:../../x": Case(custom_id_walking_paths),
    "custom_id of a job that does not exist": Case(custom_id_of_a_job_that_does_not_exist),
    "custom_id of another message's job": Case(custom_id_of_another_message),
    "custom_id with an unknown action": Case(custom_id_with_an_unknown_action),
    "custom_id of 85 digits": Case(custom_id_of_ninety_digits),
    "cancel of someone else's job": Case(cancel_of_someone_elses_job),
    "cancel of a finished job": Case(cancel_of_a_finished_job),
    "reroll of a message deleted meanwhile": Case(reroll_of_a_message_deleted_meanwhile),
}


@pytest.mark.parametrize("name", list(CASES))
async def test_a_hostile_click_gets_its_answer_and_changes_nothing_else(play: Play, name: str) -> None:
    await play(CASES[name])
