"""🔄 Reroll, by button or by reaction: the same prompt with a new seed, as a new message replying to the result.

A reroll passes the same checks as `/imagine` (the server's channels, banned
words, the member's limits); a refusal is an ephemeral answer to a click, and
a DM for a reaction (which has no ephemeral reply). Clicks and reactions from
bots never start anything.

The job is written (under the server's lock, held only for that), then its
first message is posted with the job's nonce, outside any lock, so a burst of
rerolls in one channel never holds up an `/imagine` elsewhere in the server;
only once that message exists does the job take its place in the line.

One reroll per member and image within a few seconds: a double click, or a
click plus a 🔄 reaction, arrives as separate Discord events a moment apart;
without the gate each would start (and bill) a job. The gate is a key in the
database (`JobStore.once`), so it holds even when two processes see the
events (during a restart, or with shards moving between processes).
"""

from __future__ import annotations

import contextlib
import logging
from datetime import timedelta
from typing import Any

import discord
from discord.ext import commands

from bot.jobs import JobManager, LimitReachedError
from bot.model_spec import InvalidInputError
from cogs import render
from cogs.buttons import UNKNOWN_BUTTON
from cogs.courier import CourierError, ReplyCourier
from cogs.starter import missing_permissions, prompt_refusal
from storage.base import JobStore
from storage.models import Job, JobOrigin, JobState

log = logging.getLogger(__name__)

REROLL_EMOJI = "🔄"
WINDOW_SECONDS = 10.0


class RerollCog(commands.Cog, name="Rerolls"):
    def __init__(self, bot: commands.Bot, jobs: JobManager, store: JobStore, courier: ReplyCourier) -> None:
        self.bot = bot
        self.jobs = jobs
        self.store = store
        self.courier = courier

    async def on_button(self, interaction: discord.Interaction[Any], action: str, job_id: int | None) -> None:
        job = await self.store.get(job_id) if job_id is not None else None
        message_id = interaction.message.id if interaction.message else None
        if job is None or job.origin.message_id != message_id:
            await interaction.response.send_message(UNKNOWN_BUTTON, ephemeral=True)
            return
        if interaction.user.bot:
            await interaction.response.send_message("Bots can't reroll.", ephemeral=True)
            return
        if not await self.first_reroll(interaction.user.id, job):
            await interaction.response.send_message("Already rerolling that one for you.", ephemeral=True)
            return
        try:
            await interaction.response.defer()  # acknowledges the click; the reroll is a new message
        except discord.NotFound:  # the message was deleted between the click and now
            await interaction.response.send_message("That image was deleted: nothing to reroll.", ephemeral=True)
            return
        refusal = await self.reroll(job, interaction.user.id, admin=interaction.permissions.manage_guild)
        if refusal:
            await interaction.followup.send(refusal, ephemeral=True)

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        member = payload.member
        if str(payload.emoji) != REROLL_EMOJI or member is None or member.bot:
            return  # bots (this one included) never start jobs
        job = await self.store.by_message_id(payload.message_id)
        if job is None or job.state is not JobState.DELIVERED or job.origin.channel_id != payload.channel_id:
            return
        if payload.guild_id is None or not (await self.store.guilds.get(payload.guild_id)).reaction_reroll:
            return
        if not await self.first_reroll(member.id, job):
            return
        refusal = await self.reroll(job, member.id, admin=member.guild_permissions.manage_guild)
        if refusal:
            log.info("reaction reroll of job %d refused: %s", job.id, refusal)
            with contextlib.suppress(discord.HTTPException):  # a reaction has no ephemeral reply; a DM is next
                await member.send(f"Your 🔄 reroll was not started: {refusal}", allowed_mentions=render.NO_MENTIONS)

    async def first_reroll(self, user_id: int, job: Job) -> bool:
        """Whether this is the member's first reroll of the image within the window (button and 🔄 alike)."""
        key = f"reroll:{user_id}:{job.origin.message_id or job.id}"
        return await self.store.once(key, now=self.jobs.clock.now(), window=timedelta(seconds=WINDOW_SECONDS))

    async def reroll(self, source: Job, user_id: int, *, admin: bool) -> str | None:
        """Start a new job like `source` with a new seed, replying to it; a refusal sentence, or None."""
        channel = self.bot.get_channel(source.origin.channel_id or 0)
        if not isinstance(channel, discord.abc.GuildChannel) or not isinstance(channel, discord.abc.Messageable):
            return "I can't see that channel any more."
        missing = missing_permissions(channel.permissions_for(channel.guild.me))
        if missing:
            return f"I can't post images here: I'm missing **{', '.join(missing)}** in this channel."
        settings = await self.store.guilds.get(channel.guild.id)
        refusal = prompt_refusal(settings, channel, source.prompt)
        if refusal is not None:
            return refusal
        origin = JobOrigin(
            guild_id=channel.guild.id,
            channel_id=channel.id,
            user_id=user_id,
            filesize_limit=channel.guild.filesize_limit,
        )
        try:
            new = await self.jobs.again(source, settings, origin, exempt=settings.admins_bypass and admin)
        except InvalidInputError as error:
            return str(error)
        try:
            ticket = await self.jobs.enqueue(new, settings)
        except LimitReachedError as error:
            return render.limit_refusal(error)
        job = ticket.job
        try:
            message_id = await self.courier.post(
                channel.id, render.starting(job), nonce=job.post_nonce, reference=source.origin.message_id
            )
        except CourierError as error:
            await self.jobs.abandon(job.id, f"could not post the reroll ({error})")
            return "I couldn't post in this channel."
        await self.jobs.confirm(job.id, message_id)
        return None
