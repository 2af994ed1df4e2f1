"""One answer for every failure of ours: a sentence for the member, never "This interaction failed".

The command tree's `on_error` (bot/app.py), the buttons and the remix form all
end here. A `Refusal` is not a failure but a "no" with its reason (raised by a
check, e.g. `/imagine-admin` without Manage Server): its text is the answer.
Anything else is logged with its traceback and answered with one sentence; a
reply already showing "thinking…" is edited, so it never stays stuck.
"""

from __future__ import annotations

import logging
from typing import Any

import discord
from discord import app_commands

log = logging.getLogger(__name__)

SOMETHING_WENT_WRONG = "Something went wrong on my side, so nothing was started. Please try again in a moment."


class Refusal(app_commands.CheckFailure):
    """A check said no; `str()` is the sentence for the member."""


async def answer_failure(interaction: discord.Interaction[Any], error: BaseException, what: str | None = None) -> None:
    if isinstance(error, app_commands.CommandInvokeError):
        error = error.original
    if isinstance(error, Refusal):
        text = str(error)
    else:
        name = what or (f"/{interaction.command.qualified_name}" if interaction.command else "interaction")
        log.error("%s failed", name, exc_info=error)
        text = SOMETHING_WENT_WRONG
    try:
        if not interaction.response.is_done():
            await interaction.response.send_message(text, ephemeral=True)
        elif interaction.response.type is discord.InteractionResponseType.deferred_channel_message:
            await interaction.edit_original_response(content=f"⚠️ {text}", embed=None, view=None)
        else:
            await interaction.followup.send(text, ephemeral=True)
    except discord.HTTPException:
        log.warning("could not tell the member about the failure")
