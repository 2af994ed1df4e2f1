"""Jobs whose place to be shown is gone: the server left, the channel deleted, the reply deleted, a channel the bot
can no longer post in. Those still waiting in the server's line end without being sent (nothing billed); one
queued at RunComfy is cancelled there; nothing more is sent where nobody can see it.

The slot-holding job sits in the emulator's queue (position 1 throughout, so its reply gets no edits) until the
test finishes it on the emulator.
"""

from __future__ import annotations

import asyncio

import pytest

from bot.app import ImagineBot
from bot.emulator import Duration, Emulator, Fault
from storage.models import Job, JobState
from tests.e2e.conftest import job_in_state, reply_showing
from tests.e2e.test_community_support import admin, job_for
from tests.fakediscord import FakeChannel, FakeDiscord, FakeGuild, FakeInteraction, FakeMember, Perm
from tests.fakediscord.server import RecordedRequest

QUIET = 0.3  # seconds of nothing sent, after every job has ended, to show nothing more comes


def hold_in_queue(emulator: Emulator) -> None:
    """Jobs submitted from now on wait in the emulator's queue at position 1 until `finish`ed."""
    emulator.config.queue_time = Duration.constant(60.0)
    emulator.config.queue_position_start = 1


def finish(emulator: Emulator, prompt: str) -> None:
    """RunComfy finishes the job with `prompt` now."""
    [job] = [job for job in emulator.jobs.values() if job.prompt == prompt]
    job.queue_wait = job.run_time = 0.0


def start_running(emulator: Emulator, prompt: str) -> None:
    """RunComfy starts generating the job with `prompt` now (it runs on for a minute)."""
    [job] = [job for job in emulator.jobs.values() if job.prompt == prompt]
    job.queue_wait, job.run_time = 0.0, 60.0


def sends(requests: list[RecordedRequest]) -> list[RecordedRequest]:
    """What the bot wrote to Discord (posts, edits, deletes), leaving out reads."""
    return [r for r in requests if r.bot_auth or "/webhooks/" in r.path if r.method != "GET"]


async def waiting_jobs(bot: ImagineBot, interactions: list[FakeInteraction]) -> list[Job]:
    return [await job_for(bot, interaction) for interaction in interactions]


async def one_slot_held_two_waiting(
    fake_discord: FakeDiscord,
    emulator: Emulator,
    general: FakeChannel,
    members: tuple[FakeMember, FakeMember, FakeMember],
    prompts: tuple[str, str],
) -> tuple[FakeInteraction, FakeInteraction, FakeInteraction]:
    """A server with one slot: the first member's job holds it (queued at RunComfy), the others' wait #1 and #2.
    The third member must be able to manage the server (it sets the slot count)."""
    holder_member, first_member, admin_member = members
    hold_in_queue(emulator)
    await admin(admin_member, general, "set server-jobs", limit=1)
    holder = await holder_member.run_command("imagine", general, prompt="holds the slot")
    await reply_showing(fake_discord, holder, "Queued")
    first = await first_member.run_command("imagine", general, prompt=prompts[0])
    second = await admin_member.run_command("imagine", general, prompt=prompts[1])
    await reply_showing(fake_discord, second, "Waiting for a free slot · #2")
    return holder, first, second


async def test_a_server_that_removed_the_bot_gets_nothing_more_and_its_line_is_not_sent(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    guild: FakeGuild,
    alice: FakeMember,
    bob: FakeMember,
    moderator: FakeMember,
    general: FakeChannel,
) -> None:
    holder, first, second = await one_slot_held_two_waiting(
        fake_discord, emulator, general, (alice, bob, moderator), ("waits first", "waits second")
    )
    queued = await job_for(bot, holder)
    waiting = await waiting_jobs(bot, [first, second])
    seen = len(fake_discord.requests)

    await fake_discord.remove_guild(guild)  # kicked: GUILD_DELETE

    queued = await job_in_state(bot, queued.id, JobState.CANCELLED)
    assert queued.request_id is not None
    assert emulator.jobs[queued.request_id].cancelled_at is not None  # cancelled upstream: nothing billed
    for job in waiting:
        ended = await job_in_state(bot, job.id, JobState.CANCELLED)
        assert ended.deleted_at is not None
        assert ended.request_id is None
    settled = len(fake_discord.requests)
    await asyncio.sleep(QUIET)
    assert emulator.submits_for("waits first") == 0
    assert emulator.submits_for("waits second") == 0
    assert len(emulator.submits) == 1
    # An edit of the queued job's reply already on its way as the bot was removed may land; nothing after it.
    in_flight = sends(fake_discord.requests[seen:settled])
    assert len(in_flight) <= 1
    assert all(f"imagine:cancel:{queued.id}" in r.body.decode() for r in in_flight)
    assert sends(fake_discord.requests[settled:]) == []  # no edit, no notice, no new message


async def test_a_channel_deleted_with_jobs_waiting_ends_them_unsent_and_the_line_moves_on(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    guild: FakeGuild,
    alice: FakeMember,
    bob: FakeMember,
    moderator: FakeMember,
    general: FakeChannel,
) -> None:
    hold_in_queue(emulator)
    carol = guild.add_member("carol")
    await fake_discord.sync_guild(guild)
    temporary = guild.add_channel("temporary")
    await fake_discord.sync_guild(guild)
    await admin(moderator, general, "set server-jobs", limit=1)
    holder = await alice.run_command("imagine", temporary, prompt="holds the slot")
    await reply_showing(fake_discord, holder, "Queued")
    first = await bob.run_command("imagine", temporary, prompt="waits in the doomed channel")
    second = await moderator.run_command("imagine", temporary, prompt="also waits there")
    elsewhere = await carol.run_command("imagine", general, prompt="waits in general")
    await reply_showing(fake_discord, elsewhere, "Waiting for a free slot · #3")
    queued = await job_for(bot, holder)
    waiting = await waiting_jobs(bot, [first, second])
    emulator.config.queue_time = Duration.constant(0.2)  # what is sent from now on finishes quickly

    await fake_discord.delete_channel(temporary)

    queued = await job_in_state(bot, queued.id, JobState.CANCELLED)
    assert queued.request_id is not None
    assert emulator.jobs[queued.request_id].cancelled_at is not None
    for job in waiting:
        ended = await job_in_state(bot, job.id, JobState.CANCELLED)
        assert ended.deleted_at is not None
    await reply_showing(fake_discord, elsewhere, "Done", within=15)  # the line moved on to the next channel
    assert emulator.submits_for("waits in the doomed channel") == 0
    assert emulator.submits_for("also waits there") == 0
    assert [record.body["prompt"] for record in emulator.submits] == ["holds the slot", "waits in general"]
    assert not [r for r in fake_discord.requests if r.status == 404 and r.error_code == 10003]  # never sent there


async def test_a_reply_deleted_while_its_job_waits_ends_it_unsent(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    alice: FakeMember,
    bob: FakeMember,
    moderator: FakeMember,
    general: FakeChannel,
) -> None:
    holder, doomed, behind = await one_slot_held_two_waiting(
        fake_discord, emulator, general, (alice, bob, moderator), ("deleted while waiting", "waits behind it")
    )
    job = await job_for(bot, doomed)
    assert doomed.original_message is not None
    reply = doomed.original_message

    await fake_discord.delete_message(reply)

    ended = await job_in_state(bot, job.id, JobState.CANCELLED)
    assert ended.deleted_at is not None
    await reply_showing(fake_discord, behind, "Waiting for a free slot · #1")  # the line moved up
    emulator.config.queue_time = Duration.constant(0.2)
    finish(emulator, "holds the slot")
    await reply_showing(fake_discord, holder, "Done", within=15)
    await reply_showing(fake_discord, behind, "Done", within=15)
    assert emulator.submits_for("deleted while waiting") == 0
    assert [record.body["prompt"] for record in emulator.submits] == ["holds the slot", "waits behind it"]
    assert not [r for r in fake_discord.requests if r.error_code == 10008]  # nothing sent to the deleted reply


@pytest.mark.parametrize("found", ["generating", "delivering"])
async def test_no_job_is_sent_for_a_channel_the_bot_found_it_cannot_post_in(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    guild: FakeGuild,
    alice: FakeMember,
    bob: FakeMember,
    moderator: FakeMember,
    general: FakeChannel,
    found: str,
) -> None:
    """Bob may run one job at a time; his two in #hidden wait for the one he runs in #general. Alice's job in #hidden
    runs meanwhile. Then the bot loses #hidden (View Channel taken away, Discord sends it no event) and finds out
    when it next writes there (Alice's "Generating", or her image): from then on nothing is sent for #hidden, not
    even once Bob's turn comes."""
    hold_in_queue(emulator)
    hidden = guild.add_channel("hidden")
    await fake_discord.sync_guild(guild)
    await admin(moderator, general, "set member-jobs", limit=1)
    bobs_turn = await bob.run_command("imagine", general, prompt="bob's turn")
    await reply_showing(fake_discord, bobs_turn, "Queued")
    alices = await alice.run_command("imagine", hidden, prompt="finds the door shut")
    await reply_showing(fake_discord, alices, "Queued")
    later = [await bob.run_command("imagine", hidden, prompt=f"bob waits {index}") for index in range(2)]
    await reply_showing(fake_discord, later[1], "Waiting for one of your images to finish · #2")
    waiting = await waiting_jobs(bot, later)
    made = await job_for(bot, alices)

    fake_discord.clock.advance(16 * 60)  # the interaction tokens expired: the bot writes with its own token
    hidden.set_overwrite(guild.bot_role, deny=Perm.VIEW_CHANNEL)  # 403 Missing Access from now on
    emulator.config.queue_time = Duration.constant(0.2)
    if found == "generating":
        start_running(emulator, "finds the door shut")  # its "Generating" edit meets Missing Access
    else:
        finish(emulator, "finds the door shut")  # its image meets Missing Access

    for job in waiting:
        ended = await job_in_state(bot, job.id, JobState.CANCELLED)
        assert ended.request_id is None
    finish(emulator, "finds the door shut")
    made = await job_in_state(bot, made.id, JobState.UNDELIVERABLE)  # made and billed, shown nowhere
    assert made.deleted_at is not None
    finish(emulator, "bob's turn")  # Bob's slot frees: nothing of his in #hidden is left to start
    await job_in_state(bot, (await job_for(bot, bobs_turn)).id, JobState.DELIVERED, within=15)
    await asyncio.sleep(QUIET)
    assert emulator.submits_for("bob waits 0") == 0
    assert emulator.submits_for("bob waits 1") == 0
    assert len(emulator.submits) == 2


async def test_a_cancel_runcomfy_refuses_does_not_keep_the_servers_other_jobs_from_ending(
    fake_discord: FakeDiscord,
    bot: ImagineBot,
    emulator: Emulator,
    guild: FakeGuild,
    alice: FakeMember,
    bob: FakeMember,
    general: FakeChannel,
) -> None:
    """Each job of a server the bot left ends on its own: one whose cancel fails upstream must not leave the
    next one queued and billed."""
    assert bot.store is not None
    hold_in_queue(emulator)
    replies = [await alice.run_command("imagine", general, prompt="queued one")]
    replies.append(await bob.run_command("imagine", general, prompt="queued two"))
    queued = [await job_in_state(bot, (await job_for(bot, reply)).id, JobState.IN_QUEUE) for reply in replies]
    emulator.inject("cancel", Fault.http(403, {"error_message": "Request belongs to another account"}))

    await fake_discord.remove_guild(guild)

    async with asyncio.timeout(5):  # the job whose cancel RunComfy took ends cancelled
        while True:
            ended = [await bot.store.get(job.id) for job in queued]
            if any(job is not None and job.state is JobState.CANCELLED for job in ended):
                break
            await asyncio.sleep(0.02)
    cancelled_upstream = [rid for rid, job in emulator.jobs.items() if job.cancelled_at is not None]
    assert len(cancelled_upstream) == 1  # the other's cancel was refused: it runs on, and is billed
