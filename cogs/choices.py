"""What `/imagine`'s pickers offer: the server's models, and only the ratios and counts the chosen model supports.

Discord asks the bot while the member types (autocomplete, answered within 3
seconds); the bot answers from the server's settings and the registry, and
still checks the final choice itself, since a member can type anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from bot.attachments import Offered
from bot.model_registry import ModelDescription, ModelRegistry, find, server_default, server_models
from bot.model_spec import ASPECT_RATIOS

if TYPE_CHECKING:
    from storage.base import JobStore

CHOICES_MAX = 25  # Discord shows at most 25 suggestions
RATIO_LABELS = {ratio.value: ratio.choice_name for ratio in ASPECT_RATIOS}


def offered(attachment: discord.Attachment) -> Offered:
    """An attachment as the fetcher takes it."""
    return Offered(attachment.url, attachment.filename, attachment.size, attachment.content_type)


def describe(model: ModelDescription) -> str:
    """A model as the picker lists it: its name, what it does, how many images it can make."""
    what = "edits an image" if model.edits else "text to image"
    count = f" · up to {model.max_count} images" if model.max_count > 1 else ""
    return f"{model.name} · {what}{count}"[:100]


@dataclass(frozen=True, slots=True)
class Picking:
    """What a member typing `/imagine` may pick: the server's models, and the one picked so far (else the default)."""

    models: list[ModelDescription]
    picked: ModelDescription | None


async def picking(registry: ModelRegistry, store: JobStore, interaction: discord.Interaction[Any]) -> Picking:
    settings = await store.guilds.get(interaction.guild_id or 0)
    allowed = server_models(registry, settings)
    typed = getattr(interaction.namespace, "model", None)
    picked = find(registry, typed) if isinstance(typed, str) and typed else None
    if picked is None or picked not in allowed:
        picked = server_default(registry, settings)
    return Picking(allowed, picked)


def models(offer: Picking, current: str) -> list[app_commands.Choice[str]]:
    text = current.casefold()
    return [
        app_commands.Choice(name=describe(model), value=model.id)
        for model in offer.models
        if text in model.name.casefold() or text in model.id
    ][:CHOICES_MAX]


def ratios(offer: Picking, current: str) -> list[app_commands.Choice[str]]:
    if offer.picked is None:
        return []
    return [
        app_commands.Choice(name=RATIO_LABELS[ratio], value=ratio)
        for ratio in offer.picked.ratios
        if current.strip() in RATIO_LABELS[ratio]
    ][:CHOICES_MAX]


def counts(offer: Picking) -> list[app_commands.Choice[int]]:
    most = offer.picked.max_count if offer.picked is not None else 1
    return [app_commands.Choice(name=f"{n} image{'s' if n > 1 else ''}", value=n) for n in range(1, most + 1)]
