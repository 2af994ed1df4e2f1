"""What `/imagine`'s pickers offer: the server's models, and only the ratios and counts the chosen model supports.

Discord asks the bot while the member types (autocomplete, answered within 3
seconds); the bot answers from the server's settings and the registry, and
still checks the final choice itself, since a member can type anything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from bot.attachments import Offered
from bot.model_registry import ModelDescription, find, server_default, server_models
from bot.model_spec import ASPECT_RATIOS

if TYPE_CHECKING:
    from bot.jobs import JobManager
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


async def _context(interaction: discord.Interaction[Any]) -> tuple[list[ModelDescription], ModelDescription | None]:
    """The server's models, and the one the member picked so far (else the server's default)."""
    cog: Any = interaction.client.get_cog("Imagine")
    jobs: JobManager = cog.jobs
    store: JobStore = cog.store
    settings = await store.guilds.get(interaction.guild_id or 0)
    models = server_models(jobs.registry, settings)
    typed = getattr(interaction.namespace, "model", None)
    picked = find(jobs.registry, typed) if isinstance(typed, str) and typed else None
    if picked is None or picked not in models:
        picked = server_default(jobs.registry, settings)
    return models, picked


async def models(interaction: discord.Interaction[Any], current: str) -> list[app_commands.Choice[str]]:
    found, _ = await _context(interaction)
    text = current.casefold()
    return [
        app_commands.Choice(name=describe(model), value=model.id)
        for model in found
        if text in model.name.casefold() or text in model.id
    ][:CHOICES_MAX]


async def ratios(interaction: discord.Interaction[Any], current: str) -> list[app_commands.Choice[str]]:
    _, model = await _context(interaction)
    if model is None:
        return []
    return [
        app_commands.Choice(name=RATIO_LABELS[ratio], value=ratio)
        for ratio in model.ratios
        if current.strip() in RATIO_LABELS[ratio]
    ][:CHOICES_MAX]


async def counts(interaction: discord.Interaction[Any], current: int | str) -> list[app_commands.Choice[int]]:
    _, model = await _context(interaction)
    most = model.max_count if model is not None else 1
    return [app_commands.Choice(name=f"{n} image{'s' if n > 1 else ''}", value=n) for n in range(1, most + 1)]
