"""The buttons on job messages, as one persistent `DynamicItem`.

The custom_id (`imagine:<action>:<job id>`) is stored on the message by
Discord, so a button keeps working after a restart once this class is
registered with `bot.add_dynamic_items`. The template deliberately accepts any
`imagine:` id: a forged or stale id (`imagine:reroll:../../x`) still reaches
the handler and gets a friendly answer instead of "This interaction failed".
"""

from __future__ import annotations

import logging
import re
from typing import Any, Protocol

import discord

from cogs.access import refuse
from cogs.failures import answer_failure

log = logging.getLogger(__name__)

PREFIX = "imagine"
CUSTOM_ID_MAX = 100
# The answer to a button whose job is unknown, forged or deleted (every cog that handles buttons says this).
UNKNOWN_BUTTON = "That button belongs to an image I don't know (any more)."

# action -> (label, emoji, style)
ACTIONS: dict[str, tuple[str, str, discord.ButtonStyle]] = {
    "reroll": ("Reroll", "🔄", discord.ButtonStyle.secondary),
    "cancel": ("Cancel", "❌", discord.ButtonStyle.danger),
    "remix": ("Remix", "🎛️", discord.ButtonStyle.secondary),
    "delete": ("Delete", "🗑️", discord.ButtonStyle.secondary),
    "edit": ("Edit", "✏️", discord.ButtonStyle.secondary),  # imagine:edit:<job id>:<n>: image n as an edit's input
    "alone": ("Image", "🔍", discord.ButtonStyle.secondary),  # imagine:alone:<job id>:<n>: image n on its own
}
# The cog (by name) that answers each action; anything else (cancel, unknown) goes to "Imagine".
HANDLERS = {"reroll": "Rerolls", "remix": "Results", "delete": "Results", "edit": "Gallery", "alone": "Gallery"}


class ButtonHandler(Protocol):
    async def on_button(self, interaction: discord.Interaction[Any], action: str, job_id: int | None) -> None: ...


def _number(raw: str, digits: int) -> int | None:
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= digits else None


def parse_custom_id(custom_id: str) -> tuple[str, int | None]:
    """The action and job id of a custom_id; job id None when it is not a plain positive number."""
    _, _, rest = custom_id.partition(":")
    action, _, raw_id = rest.partition(":")
    return action, _number(raw_id.partition(":")[0], 18)


def image_number(custom_id: str) -> int | None:
    """The image a per-image button names (`imagine:edit:<job id>:<n>`, n from 1), or None."""
    return _number(custom_id.split(":")[3], 2) if custom_id.count(":") == 3 else None


class ImagineButton(discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=re.compile(r"imagine:.*")):
    """A job button; the cog named in HANDLERS (else "Imagine") answers the click."""

    def __init__(
        self,
        action: str,
        job_id: int | None,
        number: int | None = None,
        *,
        row: int | None = None,
        numbered: bool = True,
    ) -> None:
        """`number`: the image a per-image button acts on; `numbered=False` keeps it out of the label, where the
        message shows one image only ("✏️ Edit", not "✏️ Edit 1")."""
        label, emoji, style = ACTIONS.get(action, (action[:80] or "?", "❔", discord.ButtonStyle.secondary))
        custom_id = f"{PREFIX}:{action}:{job_id}"
        if number is not None:
            custom_id += f":{number}"
            if numbered:
                label = f"{label} {number}"
        button = discord.ui.Button[discord.ui.View](
            label=label, emoji=emoji, style=style, custom_id=custom_id[:CUSTOM_ID_MAX], row=row
        )
        super().__init__(button)
        self.action = action
        self.job_id = job_id
        self.number = number

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> ImagineButton:
        return cls(*parse_custom_id(match.string), image_number(match.string))

    async def interaction_check(self, interaction: discord.Interaction[Any]) -> bool:
        """While the bot shuts down, or in a server the operator does not allow, a click gets one sentence."""
        return not await refuse(interaction)

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        handler: ButtonHandler | None = interaction.client.get_cog(HANDLERS.get(self.action, "Imagine"))
        if handler is None:
            await interaction.response.send_message("The bot is starting up; try again in a moment.", ephemeral=True)
            return
        try:
            await handler.on_button(interaction, self.action, self.job_id)
        except Exception as error:
            await answer_failure(interaction, error, f"button {self.custom_id}")
