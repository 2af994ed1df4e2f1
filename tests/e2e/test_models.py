"""Several models, image input and galleries, end to end: the bot against the fake Discord and the emulator."""

from __future__ import annotations

import contextlib
import io
import random
import sqlite3
from collections.abc import Awaitable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.app import ImagineBot
from bot.emulator import Duration, Emulator, Fault
from bot.jobs.upstream import INPUT_EXPIRED
from bot.model_registry import vetted_models
from bot.settings import DEFAULT_MODEL
from storage.models import JobState
from storage.sqlite import SQLiteJobStore
from tests.clocks import FakeDiscordClock
from tests.e2e.conftest import BotStarter, job_in_state, nothing_started, private_answer, reply_showing
from tests.e2e.test_community_support import job_for
from tests.fakediscord import FakeChannel, FakeDiscord, FakeGuild, FakeInteraction, FakeMember

NANO = "google/nano-banana-2/text-to-image"
NANO_EDIT = "google/nano-banana-2/edit"


def png(width: int = 64, height: int = 48, colour: str = "teal") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def noise(size: int = 256) -> bytes:
    """A PNG that does not compress: a stored copy of it shows in the database's size."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (size, size), random.Random(size).randbytes(size * size * 3)).save(buffer, format="PNG")
    return buffer.getvalue()


def bytes_in_use(database: Path) -> int:
    """What the SQLite file holds, free pages left out."""
    with contextlib.closing(sqlite3.connect(database)) as db:
        (pages,), (free,), (size,) = (
            db.execute(f"PRAGMA {name}").fetchone() for name in ("page_count", "freelist_count", "page_size")
        )
        return int((pages - free) * size)


def submitted(emulator: Emulator, prompt: str) -> dict[str, Any]:
    """The JSON body the emulator received for `prompt`."""
    [record] = [record for record in emulator.submits if prompt in record.body.values()]
    return record.body


async def refusal(fake: FakeDiscord, interaction_coro: Awaitable[FakeInteraction]) -> str:
    """What only the member reads, before the command's reply (a choice refused) or after it (an image refused once
    fetched)."""
    return (await private_answer(fake, await interaction_coro)).content


async def test_an_edit_from_an_attached_image(
    fake_discord: FakeDiscord, bot: ImagineBot, emulator: Emulator, alice: FakeMember, general: FakeChannel
) -> None:
    picture = png()
    interaction = await alice.run_command("imagine", general, prompt="make it snow", image=("me.png", picture))
    message = await reply_showing(fake_discord, interaction, "Done")
    body = submitted(emulator, "make it snow")
    [url] = body["image_urls"]
    assert "ex=" in str(url)  # the attachment's own (signed) link
    assert emulator.inputs.fetched == [(url, 200)]  # RunComfy could read it
    fields = {field["name"]: field["value"] for field in message.embeds[0]["fields"]}
    assert fields["Kind"] == "✏️ Edit of an image"
    assert fields["Model"] == "Nano Banana 2 Edit"
    assert "Seed" not in fields  # Nano Banana takes none
    description = message.attachments[0].description
    assert description is not None
    assert description.startswith("An edit of the member's image: make it snow")
    assert bot.store is not None
    [job] = await bot.store.jobs_for_user(alice.id)
    assert job.model == NANO_EDIT
    stored = await bot.store.inputs.get(job.id)
    assert stored is not None
    assert (stored.data, stored.width, stored.height) == (picture, 64, 48)
    await job_in_state(bot, job.id, JobState.DELIVERED)
    # ✉️ details: the model, and the picture the edit started from, kept with the job.
    await alice.react(message, "✉️")
    dms = await fake_discord.wait_for(lambda: fake_discord.dm_channel(alice.user).messages)
    details = {field["name"]: field["value"] for field in dms[0].embeds[0]["fields"]}
    assert details["Model"] == "Nano Banana 2 Edit"
    assert dms[0].attachments[0].data == picture


async def test_rerolls_and_remixes_of_an_edit_share_its_stored_image(
    fake_discord: FakeDiscord, bot: ImagineBot, emulator: Emulator, alice: FakeMember, general: FakeChannel
) -> None:
    # A member rerolling an edit ten times must not store the same picture ten times over.
    assert isinstance(bot.store, SQLiteJobStore)
    store = bot.store
    picture = noise()
    original = await reply_showing(
        fake_discord,
        await alice.run_command("imagine", general, prompt="make it snow", image=("me.png", picture)),
        "Done",
    )
    [source] = await store.jobs_for_user(alice.id)
    source = await job_in_state(bot, source.id, JobState.DELIVERED)
    before = bytes_in_use(store.path)
    await alice.click(original, f"imagine:reroll:{source.id}")
    reroll = await fake_discord.wait_for(
        lambda: next((m for m in general.messages if m.referenced is original and "Done" in m.content), None)
    )
    click = await alice.click(original, f"imagine:remix:{source.id}")
    await click.wait_until_acked()
    remix = await reply_showing(fake_discord, await alice.submit_modal(click, {"prompt": "make it rain"}), "Done")
    children = await store.children(source.id)
    assert len(children) == 2
    for child in children:
        await job_in_state(bot, child.id, JobState.DELIVERED)
    assert bytes_in_use(store.path) - before < len(picture) // 2  # two more jobs, no second copy of the picture
    assert {record.body["image_urls"][0] for record in emulator.submits} == {source.input_url}  # the one link

    # Retention takes the source: what its rerolls started from stays theirs, in ✉️ details too.
    assert source.finished_at is not None
    assert await store.prune(before=source.finished_at + timedelta(microseconds=1)) == 1
    assert await store.get(source.id) is None
    for child in children:
        kept = await store.inputs.get(child.id)
        assert kept is not None
        assert (kept.data, kept.content_type) == (picture, "image/png")
    for message in (reroll, remix):
        await alice.react(message, "✉️")
    dms = await fake_discord.wait_for(lambda: (found := fake_discord.dm_channel(alice.user).messages)[1:] and found)
    assert [dm.attachments[0].data for dm in dms] == [picture, picture]


async def test_edit_image_on_a_result(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    alice: FakeMember,
    bob: FakeMember,
    general: FakeChannel,
) -> None:
    first = await alice.run_command("imagine", general, prompt="a castle on a hill", seed=4)
    result = await reply_showing(fake_discord, first, "Done")
    menu = await bob.run_message_command("Edit image", result)
    await menu.wait_until_acked()
    assert menu.ack_type == 9  # a form asks for the prompt
    form = await bob.submit_modal(menu, {"prompt": "the castle at night"})
    edited = await reply_showing(fake_discord, form, "Done")
    assert edited is not result
    body = submitted(emulator, "the castle at night")
    [url] = body["image_urls"]
    assert str(url).split("?")[0] == result.attachments[0].url
    assert f"<@{bob.id}>" in edited.content


async def test_a_message_without_a_picture_cannot_be_edited(
    fake_discord: FakeDiscord, bot: ImagineBot, alice: FakeMember, general: FakeChannel
) -> None:
    words = await alice.send(general, "just words")
    menu = await alice.run_message_command("Edit image", words)
    await menu.wait_until_acked()
    assert menu.ephemeral
    assert "no picture" in (await menu.wait_for_message()).content


async def test_a_four_image_job_arrives_in_one_reply_under_the_upload_limit(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    alice: FakeMember,
    guild: FakeGuild,
    general: FakeChannel,
) -> None:
    guild.upload_limit_override = 40_000  # smaller than one preview PNG: every image must be re-encoded
    interaction = await alice.run_command("imagine", general, prompt="four foxes", model=NANO, count=4)
    message = await reply_showing(fake_discord, interaction, "Done")
    assert len(message.attachments) == 4
    assert all(attachment.size <= 40_000 for attachment in message.attachments)
    description = message.attachments[1].description
    assert description is not None
    assert description.startswith("Image 2 of 4: four foxes")
    assert len(message.versions[-1].attachments) == 4  # one edit carried them all
    ids = [component.get("custom_id") for component in message.items()]
    assert sum(1 for custom_id in ids if str(custom_id).startswith("imagine:alone:")) == 4
    assert sum(1 for custom_id in ids if str(custom_id).startswith("imagine:edit:")) == 4
    assert submitted(emulator, "four foxes")["num_images"] == 4
    assert bot.store is not None
    [job] = await bot.store.jobs_for_user(alice.id)
    job = await job_in_state(bot, job.id, JobState.DELIVERED)
    assert len(job.images) == 4
    assert job.cost_usd == pytest.approx(0.28)  # RunComfy's figure for the request when it sends one
    # 🔍 Image 2: that image alone, in a message of its own.
    alone = await alice.click(message, f"imagine:alone:{job.id}:2")
    single = await alone.wait_for_message()
    assert [a.filename for a in single.attachments] == [message.attachments[1].filename]
    # ✏️ Edit 3: image 3 becomes the input of an edit.
    opened = await alice.click(message, f"imagine:edit:{job.id}:3")
    await opened.wait_until_acked()
    form = await alice.submit_modal(opened, {"prompt": "only the third fox, in snow"})
    await reply_showing(fake_discord, form, "Done")
    [url] = submitted(emulator, "only the third fox, in snow")["image_urls"]
    assert str(url).split("?")[0] == message.attachments[2].url


async def test_more_images_than_asked_for_are_not_kept(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    alice: FakeMember,
    general: FakeChannel,
) -> None:
    """A result listing more images than the job asked (and was charged) for delivers the ones asked for: six
    would not even fit a reply's rows of buttons."""
    emulator.config.queue_time = Duration.constant(1.0)
    emulator.config.run_time = Duration.constant(0.0)
    interaction = await alice.run_command("imagine", general, prompt="one fox, please")
    job = await job_in_state(bot, (await job_for(bot, interaction)).id, JobState.IN_QUEUE)
    assert job.request_id is not None
    body = {
        "request_id": job.request_id,
        "status": "succeeded",
        "output": {"images": [f"{emulator.file_url(job.request_id)}?copy={n}" for n in range(6)]},
    }
    emulator.inject("result", Fault.http(200, body))

    message = await reply_showing(fake_discord, interaction, "Done")
    assert len(message.attachments) == 1
    job = await job_in_state(bot, job.id, JobState.DELIVERED)
    assert len(job.images) == 1


async def test_a_model_the_server_did_not_allow_is_refused(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    alice: FakeMember,
    moderator: FakeMember,
    general: FakeChannel,
) -> None:
    admin = await moderator.run_command("imagine-admin set models", general, action="remove", model=NANO)
    assert "Members may use: ImagineArt 1.5, Nano Banana 2 Edit" in (await admin.wait_for_message()).content
    said = await refusal(fake_discord, alice.run_command("imagine", general, prompt="a banana", model=NANO))
    assert "This server doesn't offer Nano Banana 2. It offers: ImagineArt 1.5" in said
    said = await refusal(fake_discord, alice.run_command("imagine", general, prompt="a banana", model="acme/unknown"))
    assert "I don't know a model called 'acme/unknown'" in said
    assert emulator.submits == []
    assert bot.store is not None
    assert await bot.store.jobs_for_user(alice.id) == []


async def test_the_servers_default_model_is_used_when_none_is_picked(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    alice: FakeMember,
    moderator: FakeMember,
    general: FakeChannel,
) -> None:
    admin = await moderator.run_command("imagine-admin set models", general, action="default", model=NANO)
    assert "Default: Nano Banana 2." in (await admin.wait_for_message()).content
    interaction = await alice.run_command("imagine", general, prompt="a quiet harbour")
    message = await reply_showing(fake_discord, interaction, "Done")
    body = submitted(emulator, "a quiet harbour")
    assert set(body) == {"prompt", "aspect_ratio"}  # no seed: the model takes none
    [job] = emulator.jobs.values()
    assert job.model == NANO
    fields = {field["name"]: field["value"] for field in message.embeds[0]["fields"]}
    assert fields["Model"] == "Nano Banana 2"


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"image": ("notes.txt", b"not a picture")}, "isn't an image"),
        ({"image": ("fake.png", b"\x89PNG but not really")}, "isn't a picture I can read"),
        ({"count": 2}, "ImagineArt 1.5 makes one image per request"),
        ({"model": NANO, "seed": 5}, "Nano Banana 2 takes no seed"),
        ({"model": NANO, "aspect_ratio": "3:1"}, "Nano Banana 2 can't make 3:1"),
        ({"model": NANO_EDIT}, "attach one, or use **Edit image**"),
        ({"model": DEFAULT_MODEL, "image": ("me.png", png())}, "makes images from text only"),
        ({"model": "**bold**`@everyone`"}, "I don't know a model called 'boldeveryone'"),  # no markup echoed
    ],
)
async def test_bad_input_gets_one_sentence_and_changes_nothing(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    alice: FakeMember,
    general: FakeChannel,
    options: dict[str, object],
    says: str,
) -> None:
    said = await refusal(fake_discord, alice.run_command("imagine", general, prompt="anything", **options))
    assert says in said
    assert emulator.submits == []
    await nothing_started(bot, alice)  # an image found unreadable once read ends the edit written before


async def test_a_resumed_edit_whose_input_link_expired_ends_with_a_clear_sentence(
    fake_discord: FakeDiscord,
    start_bot: BotStarter,
    emulator: Emulator,
    alice: FakeMember,
    bob: FakeMember,
    guild: FakeGuild,
    general: FakeChannel,
) -> None:
    clock = FakeDiscordClock(fake_discord.clock)
    emulator.config.queue_time = Duration.constant(60)
    async with start_bot(clock=clock) as bot:
        assert bot.store is not None
        await bot.store.guilds.update(guild.id, now=clock.now(), guild_concurrent=1)
        await bob.run_command("imagine", general, prompt="holding the only slot")
        interaction = await alice.run_command("imagine", general, prompt="make it autumn", image=("me.png", png()))
        reply = await reply_showing(fake_discord, interaction, "Waiting for a free slot")
        [job] = await bot.store.jobs_for_user(alice.id)
        assert job.state is JobState.WAITING
        assert job.input_expires_at is not None
    fake_discord.clock.advance(24 * 3600 + 60)  # the bot was down for a day: Discord's link died meanwhile
    async with start_bot(clock=clock, job_timeout_seconds=3 * 24 * 3600) as bot:
        assert bot.store is not None
        await bot.store.guilds.update(guild.id, now=clock.now(), guild_concurrent=10)
        assert bot.jobs is not None
        await bot.jobs.pump(guild.id)
        failed = await job_in_state(bot, job.id, JobState.FAILED)
        assert failed.error == INPUT_EXPIRED
        shown = await fake_discord.wait_for(lambda: reply if "Failed" in reply.content else None)
        assert "link to the image this edit starts from has expired" in shown.embeds[0]["fields"][-1]["value"]
    assert all("make it autumn" not in record.body.values() for record in emulator.submits)  # never sent a dead link


# What RunComfy must receive for each vetted model, written out by hand from the model's public input names
# (vetted.toml's sources, docs/models.md), never computed by the bot's own request builder. `URL` stands for
# the attachment link the member's interaction carried; `SEED` for the seed the bot picked when none was given.
URL = object()
SEED = object()
KONTEXT = "blackforestlabs/flux-1-kontext/pro/edit"
REQUESTS: dict[str, list[tuple[dict[str, object], dict[str, object]]]] = {
    DEFAULT_MODEL: [
        ({"aspect_ratio": "16:9", "seed": 11}, {"prompt": "P", "aspect_ratio": "16:9", "seed": 11}),
        ({}, {"prompt": "P", "aspect_ratio": "1:1", "seed": SEED}),
    ],
    NANO: [
        ({"aspect_ratio": "9:16", "count": 3}, {"prompt": "P", "aspect_ratio": "9:16", "num_images": 3}),
        ({}, {"prompt": "P", "aspect_ratio": "1:1"}),  # one image: `num_images` left out
    ],
    NANO_EDIT: [
        (
            {"aspect_ratio": "4:3", "count": 2, "image": True},
            {"prompt": "P", "image_urls": [URL], "aspect_ratio": "4:3", "num_images": 2},
        ),
        ({"image": True}, {"prompt": "P", "image_urls": [URL], "aspect_ratio": "1:1"}),
    ],
    KONTEXT: [
        (
            {"aspect_ratio": "2:3", "seed": 2147483647, "image": True},
            {"prompt": "P", "image_url": URL, "aspect_ratio": "2:3", "seed": 2147483647},
        ),
        ({"image": True}, {"prompt": "P", "image_url": URL, "aspect_ratio": "1:1", "seed": SEED}),
    ],
}


def test_every_vetted_model_has_its_requests_written_out() -> None:
    assert sorted(REQUESTS) == sorted(model.id for model in vetted_models())


def literal(expected: object, *, prompt: str, url: str | None, seed: int) -> object:
    """`expected` with the placeholders filled in: the prompt, the member's link and the bot's seed."""
    if expected == "P":
        return prompt
    if expected is URL:
        return url
    if expected is SEED:
        return seed
    if isinstance(expected, list):
        return [literal(item, prompt=prompt, url=url, seed=seed) for item in expected]
    if isinstance(expected, dict):
        return {key: literal(value, prompt=prompt, url=url, seed=seed) for key, value in expected.items()}
    return expected


@pytest.mark.parametrize("model_id", sorted(REQUESTS))
async def test_the_body_runcomfy_receives_for_each_model_is_the_one_written_out_here(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    alice: FakeMember,
    general: FakeChannel,
    model_id: str,
) -> None:
    assert bot.store is not None
    for number, (choices, expected) in enumerate(REQUESTS[model_id]):
        options: dict[str, object] = {key: value for key, value in choices.items() if key != "image"}
        if choices.get("image"):
            options["image"] = ("in.png", png())
        prompt = f"a lantern, take {number}"
        interaction = await alice.run_command("imagine", general, prompt=prompt, model=model_id, **options)
        await reply_showing(fake_discord, interaction, "Done")
        attachments = interaction.data.get("resolved", {}).get("attachments", {})
        url = next(iter(attachments.values()))["url"] if attachments else None
        [job] = [job for job in await bot.store.jobs_for_user(alice.id) if job.prompt == prompt]
        assert job.model == model_id
        assert submitted(emulator, prompt) == literal(expected, prompt=prompt, url=url, seed=job.seed), choices


async def test_pickers_offer_the_servers_models_and_only_what_the_chosen_model_supports(
    fake_discord: FakeDiscord, bot: ImagineBot, alice: FakeMember, moderator: FakeMember, general: FakeChannel
) -> None:
    admin = await moderator.run_command("imagine-admin set models", general, action="remove", model=NANO_EDIT)
    await admin.wait_for_message()
    models = await alice.autocomplete("imagine", general, "model", "")
    assert models == [DEFAULT_MODEL, NANO, KONTEXT]
    assert await alice.autocomplete("imagine", general, "model", "nano") == [NANO]
    assert len(await alice.autocomplete("imagine", general, "aspect_ratio", "", prompt="p")) == 9
    assert "3:1" not in await alice.autocomplete("imagine", general, "aspect_ratio", "", prompt="p", model=NANO)
    assert await alice.autocomplete("imagine", general, "count", "", prompt="p", model=NANO) == [1, 2, 3, 4]
    assert await alice.autocomplete("imagine", general, "count", "", prompt="p") == [1]


async def test_a_prompt_longer_than_the_chosen_model_takes_is_refused_before_anything_is_sent(
    fake_discord: FakeDiscord,
    start_bot: BotStarter,
    emulator: Emulator,
    alice: FakeMember,
    general: FakeChannel,
    tmp_path: Path,
) -> None:
    # The operator's file replaces Nano Banana 2 by id, with a shorter prompt limit than the bot's 2,048.
    models = tmp_path / "models.toml"
    models.write_text(
        f'[[model]]\nid = "{NANO}"\nname = "Nano Banana 2"\nkind = "text-to-image"\nprice_usd = 0.07\n'
        '[model.inputs]\nprompt = "prompt"\nprompt_max = 30\n'
        'aspect_ratio = { field = "aspect_ratio", values = ["1:1", "16:9"] }\n'
    )
    async with start_bot(runcomfy_models_file=models) as bot:
        long = "a lighthouse on a cliff at dusk, oil painting"  # 45 characters
        said = await refusal(fake_discord, alice.run_command("imagine", general, prompt=long, model=NANO))
        assert said == "The prompt is 45 characters long; Nano Banana 2 takes at most 30."
        assert emulator.submits == []
        assert bot.store is not None
        assert await bot.store.jobs_for_user(alice.id) == []
        # The same prompt suits the default model, and a short one suits Nano Banana 2.
        await reply_showing(fake_discord, await alice.run_command("imagine", general, prompt=long), "Done")
        short = await alice.run_command("imagine", general, prompt="a lighthouse", model=NANO)
        await reply_showing(fake_discord, short, "Done")
        assert submitted(emulator, "a lighthouse")["prompt"] == "a lighthouse"
