"""Nothing the bot keeps in memory for a job outlives the job: a bot that runs for months must not grow with
every image it ever made (issue 13: the per-job state is dropped when a job ends)."""

from __future__ import annotations

from typing import Any

from bot.app import ImagineBot
from bot.emulator import Duration, Emulator
from storage.models import JobState
from tests.e2e.conftest import jobs_for, reply_showing
from tests.fakediscord import FakeChannel, FakeDiscord, FakeMember


def per_job_memory(bot: ImagineBot) -> dict[str, Any]:
    """Every per-job collection of the job manager and the courier, by name, with what it still holds."""
    jobs = bot.jobs
    assert jobs is not None
    courier = bot.get_cog("Rerolls").courier  # type: ignore[union-attr]
    held: dict[str, Any] = {
        "upstream strikes": jobs.upstream._strikes,
        "upstream unknown since": jobs.upstream._unknown_since,
        "upstream overdue": jobs.upstream._overdue,
        "line confirmed": jobs.line._confirmed,
        "line shown": jobs.line._shown,
        "delivery images": jobs.delivery._images,
        "delivery fetching": jobs.delivery._fetching,
        "courier pending": courier._pending,
        "courier workers": courier._workers,
        "courier final": courier._final,
        "courier token limiters": courier._token_limiters,
        "courier dead tokens": courier._dead_tokens,
    }
    for name, worker in (("upstream", jobs.upstream.worker), ("delivery", jobs.delivery.worker)):
        held |= {f"{name} due": worker._due, f"{name} keys": worker._keys, f"{name} active": worker._active}
    return {name: set(items) for name, items in held.items() if items}


async def test_jobs_that_ended_every_way_leave_nothing_behind(
    fake_discord: FakeDiscord, bot: ImagineBot, emulator: Emulator, alice: FakeMember, general: FakeChannel
) -> None:
    emulator.config.queue_time = Duration.constant(0.0)
    emulator.config.run_time = Duration.constant(0.2)
    delivered = await alice.run_command("imagine", general, prompt="a lighthouse")
    await reply_showing(fake_discord, delivered, "Done")

    emulator.config.failure_rate = 1.0
    failed = await alice.run_command("imagine", general, prompt="a doomed lighthouse")
    await reply_showing(fake_discord, failed, "Failed")

    emulator.config.failure_rate = 0.0
    emulator.config.queue_time = Duration.constant(30.0)
    cancelled = await alice.run_command("imagine", general, prompt="a slow lighthouse")
    queued = await reply_showing(fake_discord, cancelled, "Queued")
    [job] = [job for job in await bot.store.jobs_for_user(alice.id) if job.state is JobState.IN_QUEUE]  # type: ignore[union-attr]
    click = await alice.click(queued, f"imagine:cancel:{job.id}")
    await click.wait_for_message()
    await reply_showing(fake_discord, cancelled, "Cancelled")

    await jobs_for(bot, [delivered], JobState.DELIVERED)
    await jobs_for(bot, [failed, cancelled], JobState.FAILED, JobState.CANCELLED)
    try:  # the last edits of a reply may still be on their way
        await fake_discord.wait_for(lambda: not per_job_memory(bot), 10)
    except AssertionError:
        raise AssertionError(f"kept after every job ended: {per_job_memory(bot)}") from None


async def test_a_job_whose_reply_was_deleted_leaves_nothing_behind(
    fake_discord: FakeDiscord, bot: ImagineBot, emulator: Emulator, alice: FakeMember, general: FakeChannel
) -> None:
    """Deleting the reply ends the job quietly (no notice to show anywhere): its edits' memory goes with it."""
    emulator.config.queue_time = Duration.constant(30.0)
    interaction = await alice.run_command("imagine", general, prompt="a lighthouse nobody will see")
    reply = await reply_showing(fake_discord, interaction, "Queued")

    await fake_discord.remove_message(reply)

    await jobs_for(bot, [interaction], JobState.CANCELLED)
    try:
        await fake_discord.wait_for(lambda: not per_job_memory(bot), 10)
    except AssertionError:
        raise AssertionError(f"kept after the job ended: {per_job_memory(bot)}") from None
