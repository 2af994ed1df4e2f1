"""`/imagine-admin show | set … | usage`: a server's own settings and spend, for members with Manage Server.

`default_permissions(manage_guild=True)` hides the group from everyone else
in Discord's picker, but a server can grant a command to anyone in its
Integrations settings, so every invocation checks Manage Server again here.
Settings live in SQLite next to the jobs and are read fresh by every command:
a change is in force for the very next `/imagine`, with no restart.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.jobs import JobManager
from bot.model_registry import change_models, server_default, server_models
from bot.model_spec import ASPECT_RATIOS, DEFAULT_RATIO, InvalidInputError
from cogs import choices, reports
from cogs.failures import Refusal
from cogs.moderation import TERM_MAX, TERMS_MAX, clean_term
from cogs.render import RATIO_NAMES
from storage.base import JobStore
from storage.models import GuildSettings

log = logging.getLogger(__name__)

NOT_AN_ADMIN = "Only members with the Manage Server permission can use /imagine-admin."
CHANNELS_MAX = 50
ACTIONS = [
    app_commands.Choice(name="add", value="add"),
    app_commands.Choice(name="remove", value="remove"),
    app_commands.Choice(name="clear", value="clear"),
]


async def model_choices(interaction: discord.Interaction[Any], current: str) -> list[app_commands.Choice[str]]:
    """Every model the bot offers (an admin picks among all of them, not only the server's)."""
    cog: Any = interaction.client.get_cog("Admin")
    text = current.casefold()
    return [
        app_commands.Choice(name=choices.describe(model), value=model.id)
        for model in cog.jobs.registry.offered
        if text in model.name.casefold() or text in model.id
    ][: choices.CHOICES_MAX]


def _on(enabled: bool) -> str:
    return "on" if enabled else "off"


class AdminCog(commands.Cog, name="Admin"):
    admin = app_commands.Group(
        name="imagine-admin",
        description="Set up /imagine for this server (Manage Server)",
        default_permissions=discord.Permissions(manage_guild=True),
        guild_only=True,
    )
    change = app_commands.Group(name="set", description="Change one of this server's /imagine settings", parent=admin)

    def __init__(self, jobs: JobManager, store: JobStore) -> None:
        self.jobs = jobs
        self.store = store
        self.guilds = store.guilds

    async def interaction_check(self, interaction: discord.Interaction[Any]) -> bool:
        """Manage Server, checked on every use: the picker's filter is only a default a server can change."""
        if interaction.guild_id is None or not interaction.permissions.manage_guild:
            raise Refusal(NOT_AN_ADMIN)
        return True

    async def _changed(
        self, interaction: discord.Interaction[Any], what: str, **fields: Any
    ) -> GuildSettings:  # one upsert, stamped with who did it
        settings = await self.guilds.update(
            interaction.guild_id or 0, now=self.jobs.clock.now(), by=interaction.user.id, **fields
        )
        log.info("guild %s: %s set by %d", interaction.guild_id, ", ".join(fields), interaction.user.id)
        await interaction.response.send_message(f"{what} In force now.", ephemeral=True)
        return settings

    # -- read ------------------------------------------------------------------

    @admin.command(name="show", description="Show this server's /imagine settings")
    async def show(self, interaction: discord.Interaction[Any]) -> None:
        settings = await self.guilds.get(interaction.guild_id or 0)
        embed = reports.settings_card(settings, default_ratio=DEFAULT_RATIO)
        allowed = server_models(self.jobs.registry, settings)
        default = server_default(self.jobs.registry, settings)
        embed.add_field(
            name="Models", value=", ".join(choices.describe(model) for model in allowed)[:1024], inline=False
        )
        embed.add_field(name="Default model", value=default.name)
        await interaction.response.send_message(embed=embed, ephemeral=True)

    @admin.command(name="usage", description="Images and spend per day, and the top members")
    @app_commands.describe(days="How many days back to count (default 7)")
    async def usage(self, interaction: discord.Interaction[Any], days: app_commands.Range[int, 1, 90] = 7) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        since = self.jobs.clock.now() - timedelta(days=days)
        report = await self.store.usage(interaction.guild_id or 0, since)
        price = await self.jobs.prices.base_price() if report.unpriced else None
        bot_wide = await self.jobs.budget.state() if self.jobs.budget.budget.enabled else None
        embed = reports.usage(report, days=days, base_price=price, budget=bot_wide)
        await interaction.followup.send(embed=embed, ephemeral=True)

    # -- set ---------------------------------------------------------------------

    @change.command(name="channels", description="Allow /imagine only in some channels (none listed: everywhere)")
    @app_commands.describe(action="Add or remove a channel, or clear the list", channel="The channel")
    @app_commands.choices(action=ACTIONS)
    async def channels(
        self, interaction: discord.Interaction[Any], action: str, channel: discord.TextChannel | None = None
    ) -> None:
        guild_id = interaction.guild_id or 0
        if action == "clear":
            await self.guilds.clear_channels(guild_id)
            await interaction.response.send_message(
                "/imagine works in every channel again. In force now.", ephemeral=True
            )
            return
        if channel is None:
            await interaction.response.send_message(f"Pick the channel to {action}.", ephemeral=True)
            return
        current = await self.guilds.get(guild_id)
        if action == "add" and len(current.allowed_channels) >= CHANNELS_MAX:
            await interaction.response.send_message(f"That's already {CHANNELS_MAX} channels.", ephemeral=True)
            return
        now = self.jobs.clock.now()
        settings = await self.guilds.set_channel(guild_id, channel.id, allowed=action == "add", now=now)
        listed = " ".join(f"<#{cid}>" for cid in sorted(settings.allowed_channels)) or "every channel"
        await interaction.response.send_message(f"/imagine now works in: {listed}. In force now.", ephemeral=True)

    @change.command(name="models", description="Choose the models members may use, and the default")
    @app_commands.describe(
        action="Add or remove a model, make one the default, or clear (every model)", model="The model"
    )
    @app_commands.choices(action=[*ACTIONS[:2], app_commands.Choice(name="default", value="default"), ACTIONS[2]])
    @app_commands.autocomplete(model=model_choices)
    async def models(self, interaction: discord.Interaction[Any], action: str, model: str | None = None) -> None:
        settings = await self.guilds.get(interaction.guild_id or 0)
        try:
            allowed, default, sentence = change_models(self.jobs.registry, settings, action, model)
        except InvalidInputError as error:
            await interaction.response.send_message(str(error), ephemeral=True)
            return
        await self._changed(interaction, sentence, allowed_models=allowed, default_model=default)

    @change.command(name="aspect-ratio", description="The aspect ratio /imagine uses when none is picked")
    @app_commands.describe(ratio="The default shape")
    @app_commands.choices(ratio=[app_commands.Choice(name=r.choice_name, value=r.value) for r in ASPECT_RATIOS])
    async def aspect_ratio(self, interaction: discord.Interaction[Any], ratio: str) -> None:
        await self._changed(
            interaction, f"Default aspect ratio: {RATIO_NAMES.get(ratio, ratio)}.", default_aspect_ratio=ratio
        )

    @change.command(name="member-jobs", description="How many images one member may have generating at once")
    @app_commands.describe(limit="Jobs at once per member; more wait in line (default 3)")
    async def member_jobs(self, interaction: discord.Interaction[Any], limit: app_commands.Range[int, 1, 20]) -> None:
        await self._changed(interaction, f"Each member may have {limit} generating at once.", member_concurrent=limit)
        await self.jobs.pump(interaction.guild_id or 0)

    @change.command(name="member-queue", description="How many of one member's images may wait in line")
    @app_commands.describe(limit="Jobs waiting per member; past this a new one is refused (default 10)")
    async def member_queue(self, interaction: discord.Interaction[Any], limit: app_commands.Range[int, 1, 50]) -> None:
        await self._changed(interaction, f"Up to {limit} of each member's images may wait in line.", member_queue=limit)

    @change.command(name="daily-quota", description="How many images one member may make in any 24 hours")
    @app_commands.describe(limit="Images per member per 24 hours (default 25)")
    async def daily_quota(self, interaction: discord.Interaction[Any], limit: app_commands.Range[int, 1, 1000]) -> None:
        await self._changed(interaction, f"Each member may make {limit} images in any 24 hours.", member_daily=limit)

    @change.command(name="server-jobs", description="How many images this server makes at once; more wait in line")
    @app_commands.describe(limit="Jobs at once for the whole server (default 10)")
    async def server_jobs(self, interaction: discord.Interaction[Any], limit: app_commands.Range[int, 1, 100]) -> None:
        await self._changed(interaction, f"The server makes up to {limit} images at once.", guild_concurrent=limit)
        await self.jobs.pump(interaction.guild_id or 0)  # more room: the line moves now

    @change.command(name="admin-bypass", description="Whether members with Manage Server skip the member limits")
    @app_commands.describe(enabled="On: Manage Server skips per-member limits (default on)")
    async def admin_bypass(self, interaction: discord.Interaction[Any], enabled: bool) -> None:
        await self._changed(interaction, f"Manage Server skips member limits: {_on(enabled)}.", admins_bypass=enabled)

    @change.command(name="reaction-reroll", description="Whether reacting 🔄 to a result makes a new one")
    @app_commands.describe(enabled="On: a 🔄 reaction rerolls (default on)")
    async def reaction_reroll(self, interaction: discord.Interaction[Any], enabled: bool) -> None:
        await self._changed(interaction, f"🔄 reaction rerolls: {_on(enabled)}.", reaction_reroll=enabled)

    @change.command(name="show-cost", description="Whether results and details show what the image cost")
    @app_commands.describe(enabled="On: results show the cost (default off)")
    async def show_cost(self, interaction: discord.Interaction[Any], enabled: bool) -> None:
        await self._changed(interaction, f"Results show cost: {_on(enabled)}.", show_cost=enabled)

    @change.command(name="banned-words", description="Words or phrases a prompt may not contain")
    @app_commands.describe(
        action="Add or remove words, or clear the list", words="Words or phrases, separated by commas"
    )
    @app_commands.choices(action=ACTIONS)
    async def banned_words(
        self,
        interaction: discord.Interaction[Any],
        action: str,
        words: app_commands.Range[str, 1, 1000] | None = None,
    ) -> None:
        guild_id = interaction.guild_id or 0
        if action == "clear":
            await self.guilds.clear_terms(guild_id)
            await interaction.response.send_message("No banned words any more. In force now.", ephemeral=True)
            return
        terms = [clean_term(part) for part in (words or "").split(",")]
        terms = [term for term in dict.fromkeys(terms) if term]
        if not terms:
            await interaction.response.send_message("Give one or more words, separated by commas.", ephemeral=True)
            return
        if any(len(term) > TERM_MAX for term in terms):
            await interaction.response.send_message(f"Keep each one under {TERM_MAX} characters.", ephemeral=True)
            return
        settings = await self.guilds.get(guild_id)
        if action == "add" and len(set(settings.banned_terms) | set(terms)) > TERMS_MAX:
            await interaction.response.send_message(f"The list holds at most {TERMS_MAX} entries.", ephemeral=True)
            return
        now = self.jobs.clock.now()
        for term in terms:
            settings = await self.guilds.set_term(guild_id, term, banned=action == "add", now=now)
        shown = ", ".join(f"||{discord.utils.escape_markdown(term)}||" for term in terms)
        verb = "Banned" if action == "add" else "No longer banned"
        await interaction.response.send_message(
            f"{verb}: {shown}. {len(settings.banned_terms)} on the list. In force now.", ephemeral=True
        )
