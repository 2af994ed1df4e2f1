"""Which models a server offers its members, and which one a job uses.

A server that chose nothing offers every model the bot offers, with the bot's
default; `/imagine-admin set models` narrows the list and picks the default.
A member's choice is checked here before anything is written: a model the
server does not offer is refused with the list of those it does.
"""

from __future__ import annotations

from bot.model_registry.description import Kind, ModelDescription
from bot.model_registry.loader import ModelRegistry
from bot.model_spec import InvalidInputError
from storage.models import GuildSettings


def allowed_ids(settings: GuildSettings) -> list[str] | None:
    """The ids the server listed, in its order; None when it never chose (every offered model)."""
    return settings.allowed_models.split() if settings.allowed_models else None


def server_models(registry: ModelRegistry, settings: GuildSettings) -> list[ModelDescription]:
    """The offered models this server's members may use, in the registry's order."""
    allowed = allowed_ids(settings)
    return [model for model in registry.offered if allowed is None or model.id in allowed]


def server_default(registry: ModelRegistry, settings: GuildSettings) -> ModelDescription:
    """The text-to-image model used when a member picks none: the server's default while it is still allowed,
    else the bot's, else the server's first text-to-image model."""
    models = server_models(registry, settings)
    for model_id in (settings.default_model, registry.default.id):
        chosen = registry.get(model_id or "")
        if chosen is not None and chosen in models and not chosen.edits:
            return chosen
    return next((model for model in models if not model.edits), registry.default)


def find(registry: ModelRegistry, text: str) -> ModelDescription | None:
    """A model by id, or by the name members see (any case)."""
    text = text.strip()
    found = registry.get(text)
    if found is not None:
        return found
    folded = text.casefold()
    return next((model for model in registry if model.name.casefold() == folded), None)


def choose(registry: ModelRegistry, settings: GuildSettings, requested: str | None, *, image: bool) -> ModelDescription:
    """The model a new job uses; InvalidInputError (option `model`) when the server does not offer it."""
    models = server_models(registry, settings)
    names = ", ".join(model.name for model in models) or "none"
    if requested:
        chosen = find(registry, requested)
        if chosen is None or not chosen.offered:
            raise InvalidInputError(
                "model", f"I don't know a model called '{requested[:60]}'. This server offers: {names}."
            )
        if chosen not in models:
            raise InvalidInputError("model", f"This server doesn't offer {chosen.name}. It offers: {names}.")
        return chosen
    if not image:
        return server_default(registry, settings)
    editing = [model.id for model in models if model.kind is Kind.IMAGE_EDIT]
    edit = registry.first(Kind.IMAGE_EDIT, editing)
    if edit is None:
        raise InvalidInputError("image", f"This server offers no model that edits images (it offers: {names}).")
    return edit
