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
            shown = "".join(char for char in requested[:60] if char.isalnum() or char in " ./_-")  # no markup echoed
            raise InvalidInputError("model", f"I don't know a model called '{shown}'. This server offers: {names}.")
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


def change_models(
    registry: ModelRegistry, settings: GuildSettings, action: str, requested: str | None
) -> tuple[str | None, str | None, str]:
    """`/imagine-admin set models`: the new (allowed ids, default id) and the sentence that says what changed.

    `add` and `remove` start from what members have now (every offered model
    when the server never chose); `default` picks the text-to-image model used
    when a member picks none (adding it if needed); `clear` goes back to every
    model and the bot's default. At least one text-to-image model always
    stays, so a plain `/imagine` keeps working. InvalidInputError says why not.
    """
    if action == "clear":
        return None, None, "Members may use every model again, with the bot's default."
    model = find(registry, requested or "")
    if model is None or not model.offered:
        offered = ", ".join(item.name for item in registry.offered)
        raise InvalidInputError("model", f"Pick a model from the list ({offered}).")
    current = [item.id for item in server_models(registry, settings)]
    default = settings.default_model
    if action == "add" or (action == "default" and model.id not in current):
        current = [*current, model.id] if model.id not in current else current
    if action == "remove":
        current = [model_id for model_id in current if model_id != model.id]
        if not any(not (registry.get(model_id) or registry.default).edits for model_id in current):
            raise InvalidInputError("model", "Keep at least one text-to-image model, or plain /imagine stops working.")
        default = None if default == model.id else default
    if action == "default":
        if model.edits:
            raise InvalidInputError("model", f"{model.name} edits images; the default must make images from text.")
        default = model.id
    ordered = [item.id for item in registry.offered if item.id in current]
    allowed = None if ordered == [item.id for item in registry.offered] else " ".join(ordered)
    chosen = server_default(registry, GuildSettings(settings.guild_id, allowed_models=allowed, default_model=default))
    names = ", ".join(registry.name(model_id) for model_id in ordered)
    return allowed, default, f"Members may use: {names}. Default: {chosen.name}."
