"""Helpers shared by the community-server end-to-end tests (limits, admin, member commands, results, cost).

No tests here: only what a member or admin does in several of those files.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.app import ImagineBot
from storage.models import Job, JobState
from tests.e2e.conftest import job_in_state, reply_showing
from tests.fakediscord import FakeChannel, FakeDiscord, FakeInteraction, FakeMember, FakeMessage
from tests.fakediscord.members import APPLICATION_COMMAND
from tests.fakediscord.options import build_options


async def run(member: FakeMember, where: FakeChannel, name: str, options: dict[str, Any]) -> FakeInteraction:
    """`member.run_command`, for commands with an option called `channel` (which that method's own
    `channel` parameter would swallow): the same checks, options from the synced schema."""
    fake = where.fake
    top, *path = name.split()
    command = fake.commands.find(top, member.guild.id)
    assert command is not None, f"/{top} is not synced"
    required = int(command.get("default_member_permissions") or 0)
    assert member.guild.permissions_for(member) & required == required, f"{member.name} lacks the permissions"
    data: dict[str, Any] = {"id": str(command["id"]), "name": top, "type": 1, "guild_id": command.get("guild_id")}
    data["options"], resolved = build_options(fake, member.guild, command, path, options)
    if resolved:
        data["resolved"] = resolved
    interaction = FakeInteraction(
        fake, interaction_type=APPLICATION_COMMAND, member=member, channel=where, data=data, command_name=name
    )
    return await fake.dispatch_interaction(interaction)


async def admin(member: FakeMember, where: FakeChannel, command: str, /, **options: Any) -> FakeMessage:
    """Run `/imagine-admin <command>` and return the (ephemeral) answer."""
    interaction = await run(member, where, f"imagine-admin {command}", options)
    answer = await interaction.wait_for_message()
    assert answer.ephemeral, answer.content
    return answer


async def answer_to(interaction: FakeInteraction) -> FakeMessage:
    """The interaction's own message once it is more than "thinking"."""
    return await interaction.wait_for_message()


async def job_for(bot: ImagineBot, interaction: FakeInteraction) -> Job:
    """The job whose reply is this interaction's message (written just after Discord took the acknowledgement)."""
    assert bot.store is not None
    message = await interaction.wait_until_acked()
    assert message.original_message is not None
    async with asyncio.timeout(5):
        while True:
            job = await bot.store.by_message_id(message.original_message.id)
            if job is not None:
                return job
            await asyncio.sleep(0.01)


async def finished_image(
    fake: FakeDiscord, bot: ImagineBot, member: FakeMember, channel: FakeChannel, prompt: str, **options: Any
) -> tuple[FakeMessage, Job]:
    """Make one image all the way to `delivered`; its message and job."""
    interaction = await member.run_command("imagine", channel, prompt=prompt, **options)
    message = await reply_showing(fake, interaction, "Done")
    job = await job_for(bot, interaction)
    return message, await job_in_state(bot, job.id, JobState.DELIVERED)


def backdate(database: Path, user_id: int, hours: float) -> None:
    """Move a member's jobs `hours` into the past, as if a day had gone by (the quota window is rolling)."""
    with contextlib.closing(sqlite3.connect(database)) as db, db:
        rows = db.execute("SELECT id, created_at FROM jobs WHERE user_id = ?", (user_id,)).fetchall()
        for job_id, created in rows:
            moved = datetime.fromisoformat(created).astimezone(UTC) - timedelta(hours=hours)
            db.execute(
                "UPDATE jobs SET created_at = ? WHERE id = ?", (moved.isoformat(timespec="microseconds"), job_id)
            )
