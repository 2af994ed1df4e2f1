"""What members do with a result, end to end: Remix (a form round trip), Delete, and ✉️ details by DM."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.app import ImagineBot
from bot.emulator import Emulator
from storage.models import JobState
from tests.e2e.conftest import BotStarter, job_in_state, reply_showing
from tests.e2e.test_community_support import admin, finished_image, job_for
from tests.fakediscord import FakeChannel, FakeDiscord, FakeMember


def form_values(modal: dict[str, Any]) -> dict[str, str]:  # a modal as Discord's JSON
    values = {}
    for top in modal["components"]:
        for item in [top["component"]] if "component" in top else top["components"]:
            values[item["custom_id"]] = item.get("value", "")
    return values


async def test_remix_opens_a_prefilled_form_and_starts_a_new_job(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    alice: FakeMember,
    bob: FakeMember,
    general: FakeChannel,
) -> None:
    original, source = await finished_image(fake_discord, bot, alice, general, "a fox", aspect_ratio="16:9", seed=5)
    click = await bob.click(original, f"imagine:remix:{source.id}")
    await click.wait_until_acked()
    assert click.ack_type == 9  # a modal
    assert click.modal is not None
    assert form_values(click.modal) == {"prompt": "a fox", "aspect_ratio": "16:9", "seed": "5"}

    submitted = await bob.submit_modal(click, {"prompt": "a fox at night", "aspect_ratio": "9:16", "seed": "99"})
    message = await reply_showing(fake_discord, submitted, "Done")
    assert f"<@{bob.id}>" in message.content
    assert emulator.submits_for("a fox at night", 99, "9:16") == 1
    remix = await job_for(bot, submitted)
    assert remix.parent_id == source.id
    assert remix.origin.user_id == bob.id
    await job_in_state(bot, remix.id, JobState.DELIVERED)


async def test_remix_form_works_after_a_restart_and_refuses_a_bad_seed(
    fake_discord: FakeDiscord, start_bot: BotStarter, emulator: Emulator, alice: FakeMember, general: FakeChannel
) -> None:
    async with start_bot() as first:
        original, source = await finished_image(fake_discord, first, alice, general, "a kite")
        click = await alice.click(original, f"imagine:remix:{source.id}")
        await click.wait_until_acked()
    async with start_bot():  # the form was opened by the previous process
        bad = await alice.submit_modal(click, {"seed": "minus one"})
        answer = await bad.wait_for_message()
        assert answer.ephemeral
        assert "seed must be a whole number" in answer.content
        good = await alice.submit_modal(click, {"seed": ""})  # empty: a random seed
        await reply_showing(fake_discord, good, "Done")
    assert emulator.submits_for("a kite") == 2


async def test_delete_by_the_requester_removes_the_result(
    fake_discord: FakeDiscord, bot: ImagineBot, alice: FakeMember, general: FakeChannel
) -> None:
    message, job = await finished_image(fake_discord, bot, alice, general, "a sandcastle")
    click = await alice.click(message, f"imagine:delete:{job.id}")
    answer = await click.wait_for_message()
    await fake_discord.wait_for(lambda: message.deleted and click.followups, 10)
    assert answer.ephemeral
    assert click.followups[-1].content == "Deleted."
    assert bot.store is not None
    deleted = await bot.store.get(job.id)
    assert deleted is not None
    assert deleted.deleted_at is not None


async def test_delete_is_refused_for_other_members_but_allowed_for_moderators(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    alice: FakeMember,
    bob: FakeMember,
    moderator: FakeMember,
    general: FakeChannel,
) -> None:
    message, job = await finished_image(fake_discord, bot, alice, general, "a treasured sketch")
    refused = await bob.click(message, f"imagine:delete:{job.id}")
    answer = await refused.wait_for_message()
    assert answer.ephemeral
    assert "Manage Messages" in answer.content
    assert not message.deleted

    by_moderator = await moderator.click(message, f"imagine:delete:{job.id}")
    await by_moderator.wait_until_acked()
    await fake_discord.wait_for(lambda: message.deleted, 10)


async def test_envelope_reaction_sends_the_details_by_dm(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    alice: FakeMember,
    bob: FakeMember,
    moderator: FakeMember,
    general: FakeChannel,
) -> None:
    await admin(moderator, general, "set show-cost", enabled=True)
    message, job = await finished_image(fake_discord, bot, alice, general, "a glass whale", aspect_ratio="3:2", seed=77)
    await bob.react(message, "✉️")
    dms = fake_discord.dm_channel(bob.user)
    dm = await fake_discord.wait_for(lambda: dms.messages[-1] if dms.messages else None, 10)
    [embed] = dm.embeds
    assert embed["title"] == f"Image details · job {job.id}"
    assert embed["description"] == "a glass whale"
    fields = {field["name"]: field["value"] for field in embed["fields"]}
    assert fields["Seed"] == "`77`"
    assert fields["Aspect ratio"].startswith("3:2")
    assert fields["Request id"] == f"`{job.request_id}`"
    assert "Generating:" in fields["Timings"]
    assert "Total:" in fields["Timings"]
    assert fields["Cost"] == "$0.03"
    await bob.unreact(message, "✉️")
    await bob.react(message, "✉️")  # a second ✉️ right away is not a second DM
    await asyncio.sleep(0.3)
    assert len(dms.messages) == 1
    assert not [m for m in general.messages if "DMs are closed" in m.content]


async def test_envelope_reaction_with_closed_dms_says_so_to_that_member_only(
    fake_discord: FakeDiscord, bot: ImagineBot, alice: FakeMember, bob: FakeMember, general: FakeChannel
) -> None:
    message, _ = await finished_image(fake_discord, bot, alice, general, "a quiet lake")
    bob.dms_open = False
    await bob.react(message, "✉️")
    notice = await fake_discord.wait_for(
        lambda: next((m for m in general.messages if "DMs are closed" in m.content), None), 10
    )
    assert notice.content.startswith(f"<@{bob.id}>")
    assert notice.pings.users == frozenset({bob.id})
    assert "a quiet lake" not in notice.content
    assert not fake_discord.dm_channel(bob.user).messages
