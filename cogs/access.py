"""Who may use the bot right now: not while it restarts, and only in the servers its operator allows.

Every interaction the bot answers (commands, buttons, the remix form) passes
`refuse` first; a refusal is one ephemeral sentence, never "This interaction
failed". Reactions have no reply: `bot/app.py` simply does not dispatch those
from servers off the allow-list, and leaves such servers when it joins them
or finds itself in them at start.
"""

from __future__ import annotations

import contextlib
from typing import Any

import discord

from bot.shutdown import refuse_while_stopping

NOT_ALLOWED = (
    "This bot is not set up for this server, so it can't do that here. Its operator decides which servers it works in."
)


def guild_allowed(client: object, guild_id: int | None) -> bool:
    """Whether the operator lets the bot work in `guild_id` (DISCORD_ALLOWED_GUILD_IDS; empty: everywhere)."""
    settings = getattr(client, "settings", None)
    allowed = getattr(settings, "discord_allowed_guild_ids", None)
    return not allowed or guild_id is None or guild_id in allowed


async def refuse(interaction: discord.Interaction[Any]) -> bool:
    """True, after telling the member why (ephemerally), when this interaction must not be acted on.

    For `interaction_check`s: `return not await refuse(interaction)`.
    """
    if await refuse_while_stopping(interaction):
        return True
    if guild_allowed(interaction.client, interaction.guild_id):
        return False
    with contextlib.suppress(discord.HTTPException):
        if not interaction.response.is_done():
            await interaction.response.send_message(NOT_ALLOWED, ephemeral=True)
    return True
