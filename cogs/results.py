"""What members do with a finished image: remix it, delete it, or get its details by DM (✉️).

Remix opens a form prefilled with the job's prompt, aspect ratio and seed;
the submitted form starts a new job through exactly the checks `/imagine`
uses. The form's custom_id names the job (`imagine:remix-form:<job id>`) and
its submission is handled from the raw interaction, not from a modal object
kept in memory, so a form opened before a restart still works after it.

Delete removes the result message for its requester or anyone with Manage
Messages; the job row stays (usage reports and history still count it).

A reaction has no ephemeral reply, so when a member's DMs are closed the bot
says so in a short message that mentions only them and removes itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

import discord
from discord.ext import commands

from bot.jobs import JobManager
from bot.model_spec import NO_SEED, PROMPT_MAX, RATIO_VALUES, SEED_MAX, InvalidInputError, check_ratio
from cogs import render, reports
from cogs.access import refuse
from cogs.buttons import UNKNOWN_BUTTON
from cogs.failures import answer_failure
from cogs.gates import Gate
from cogs.starter import JobStarter
from storage.base import JobStore
from storage.models import Job, JobState

log = logging.getLogger(__name__)

DETAILS_EMOJI = "✉"  # compared without the variation selector (U+FE0F) some clients add
REMIX_FORM = "imagine:remix-form:"
NOTICE_SECONDS = 20.0
DM_WINDOW = 600.0
DMS_PER_WINDOW = 5
DMS_CLOSED = (
    "{mention} I couldn't send you the details: your DMs are closed for this server "
    "(Server menu → Privacy Settings → Direct Messages)."
)


class RemixForm(discord.ui.Modal):
    """The form behind 🎛️ Remix; submitted values are read by `ResultsCog.on_interaction`."""

    def __init__(self, job: Job) -> None:
        super().__init__(title="Remix this image", custom_id=f"{REMIX_FORM}{job.id}", timeout=None)
        self.add_item(
            discord.ui.Label(
                text="Prompt",
                component=discord.ui.TextInput(
                    custom_id="prompt",
                    style=discord.TextStyle.paragraph,
                    default=job.prompt[:PROMPT_MAX],
                    max_length=PROMPT_MAX,
                ),
            )
        )
        self.add_item(
            discord.ui.Label(
                text="Aspect ratio",
                description=", ".join(RATIO_VALUES),
                component=discord.ui.TextInput(custom_id="aspect_ratio", default=job.aspect_ratio, max_length=5),
            )
        )
        self.add_item(
            discord.ui.Label(
                text="Seed",
                description="Leave empty for a random seed.",
                component=discord.ui.TextInput(
                    custom_id="seed",
                    default=str(job.seed) if job.seed != NO_SEED else None,
                    required=False,
                    max_length=len(str(SEED_MAX)),
                ),
            )
        )


def _inputs(components: object) -> Iterator[tuple[str, str]]:
    """(custom_id, value) of every text input in a modal submission, in rows or labels alike."""
    if isinstance(components, list):
        for component in components:
            yield from _inputs(component)
    elif isinstance(components, Mapping):
        if isinstance(components.get("custom_id"), str) and isinstance(components.get("value"), str):
            yield components["custom_id"], components["value"]
        for key in ("components", "component"):
            yield from _inputs(components.get(key))


def form_values(data: Mapping[str, Any]) -> dict[str, str]:
    """Every text input of a modal submission, by custom_id."""
    return dict(_inputs(data.get("components")))


FormHandler = Callable[[discord.Interaction[Any], str, dict[str, str]], Awaitable[None]]


async def on_form(interaction: discord.Interaction[Any], prefix: str, handler: FormHandler, what: str) -> None:
    """Hand a submitted form whose custom_id starts with `prefix` to `handler` (the rest of the id, the values).

    Forms are answered from the `on_interaction` event rather than a Modal's
    callback, so a form opened before a restart still works after it.
    """
    data: Mapping[str, Any] = interaction.data or {}
    custom_id = str(data.get("custom_id", ""))
    if interaction.type is not discord.InteractionType.modal_submit or not custom_id.startswith(prefix):
        return
    if await refuse(interaction):
        return
    try:
        await handler(interaction, custom_id.removeprefix(prefix), form_values(data))
    except Exception as error:
        await answer_failure(interaction, error, f"{what} {custom_id}")


def parse_remix(values: Mapping[str, str]) -> tuple[str, str | None, int | None]:
    """The prompt, aspect ratio (None: the server's default) and seed (None: random) from the form."""
    ratio = values.get("aspect_ratio", "").strip().replace(" ", "") or None
    if ratio is not None:
        check_ratio(ratio)
    raw_seed = values.get("seed", "").strip().replace(",", "").replace("_", "")
    if raw_seed and not (raw_seed.isascii() and raw_seed.isdigit() and int(raw_seed) <= SEED_MAX):
        raise InvalidInputError(
            "seed", f"The seed must be a whole number from 0 to {SEED_MAX:,}, or empty for a random one."
        )
    return values.get("prompt", ""), ratio, int(raw_seed) if raw_seed else None


class ResultsCog(commands.Cog, name="Results"):
    def __init__(self, bot: commands.Bot, starter: JobStarter, jobs: JobManager, store: JobStore) -> None:
        self.bot = bot
        self.starter = starter
        self.jobs = jobs
        self.store = store
        self.details_gate = Gate(window=30.0)  # one ✉️ per member and image within 30 s
        # A DM costs nothing, but a member reacting on every image must not make the bot spam DMs (Discord counts
        # a bot's DMs against it): a few per member and ten minutes, as /imagine is limited per member.
        self.dm_gate = Gate(window=DM_WINDOW, per=DMS_PER_WINDOW)
        self._notices: set[asyncio.Task[None]] = set()

    async def cog_unload(self) -> None:
        for task in list(self._notices):
            task.cancel()
        await asyncio.gather(*self._notices, return_exceptions=True)

    # -- buttons -------------------------------------------------------------

    async def on_button(self, interaction: discord.Interaction[Any], action: str, job_id: int | None) -> None:
        job = await self.store.get(job_id) if job_id is not None else None
        message = interaction.message
        if job is None or message is None or job.origin.message_id != message.id:
            await interaction.response.send_message(UNKNOWN_BUTTON, ephemeral=True)
            return
        if action == "remix":
            form = RemixForm(job)
            await interaction.response.send_modal(form)
            form.stop()  # the submission is handled in on_interaction, which also works after a restart
            return
        if interaction.user.id != job.origin.user_id and not interaction.permissions.manage_messages:
            await interaction.response.send_message(
                "Only the member who asked for this image, or someone with Manage Messages, can delete it.",
                ephemeral=True,
            )
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        with contextlib.suppress(discord.NotFound):  # already gone: the goal is met
            await message.delete()
        await self.jobs.mark_deleted(job.id)
        log.info("job %d: result deleted by %d", job.id, interaction.user.id, extra={"job_id": job.id})
        await interaction.followup.send("Deleted.", ephemeral=True)

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction[Any]) -> None:
        await on_form(interaction, REMIX_FORM, self._remix, "remix")

    async def _remix(self, interaction: discord.Interaction[Any], raw_id: str, values: dict[str, str]) -> None:
        source = await self.store.get(int(raw_id)) if raw_id.isascii() and raw_id.isdigit() else None
        if source is None or source.origin.guild_id != interaction.guild_id:
            await interaction.response.send_message(UNKNOWN_BUTTON, ephemeral=True)
            return
        try:
            prompt, ratio, seed = parse_remix(values)
        except InvalidInputError as error:
            await interaction.response.send_message(str(error), ephemeral=True)
            return
        await self.starter.start(
            interaction,
            prompt=prompt,
            aspect_ratio=ratio,
            seed=seed,
            parent_id=source.id,
            model=source.model,
            count=source.count,
            image=source if source.input_url is not None else None,  # its kept image is named, not read
        )

    # -- ✉️ details by DM ----------------------------------------------------

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        member = payload.member
        if str(payload.emoji).rstrip("\ufe0f") != DETAILS_EMOJI or member is None or member.bot:
            return
        job = await self.store.by_message_id(payload.message_id)
        if job is None or job.state is not JobState.DELIVERED or job.origin.channel_id != payload.channel_id:
            return
        if not self.details_gate.admit(member.id, job.id) or not self.dm_gate.admit(member.id):
            return
        settings = await self.store.guilds.get(member.guild.id)
        embed = reports.details(job, model_name=self.jobs.registry.name(job.model), show_cost=settings.show_cost)
        source = await self.store.inputs.get(job.id) if job.input_url else None
        extras: dict[str, Any] = {}
        if source is not None:  # an edit: the picture it started from, kept with the job
            kind = source.content_type.removeprefix("image/").replace("jpeg", "jpg")
            extras["file"] = discord.File(io.BytesIO(source.data), filename=f"imagine-{job.id}-input.{kind}")
        try:
            await member.send(embed=embed, allowed_mentions=render.NO_MENTIONS, **extras)
        except discord.Forbidden:
            self._notify(payload.channel_id, member)
        except discord.HTTPException as error:
            log.warning("job %d: details DM failed (%d)", job.id, error.status, extra={"job_id": job.id})
        else:
            log.info("job %d: details sent by DM", job.id, extra={"job_id": job.id})

    def _notify(self, channel_id: int, member: discord.Member) -> None:
        task = asyncio.create_task(self._dms_closed(channel_id, member), name=f"dms-closed-{member.id}")
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)

    async def _dms_closed(self, channel_id: int, member: discord.Member) -> None:
        """A reaction has no ephemeral reply: a notice pinging only them, removed after a short while."""
        channel = self.bot.get_partial_messageable(channel_id)
        try:
            notice = await channel.send(
                DMS_CLOSED.format(mention=member.mention),
                allowed_mentions=discord.AllowedMentions(everyone=False, roles=False, users=[member]),
            )
            await asyncio.sleep(NOTICE_SECONDS)
            await notice.delete()
        except discord.HTTPException as error:
            log.info("could not tell member %d their DMs are closed (%d)", member.id, error.status)
