"""Which models the bot can use and how each one's request is built (docs/models.md)."""

from bot.model_registry.description import MAX_COUNT, Kind, ModelDescription
from bot.model_registry.loader import ModelRegistry, RegistryError, load_registry, parse_models, vetted_models
from bot.model_registry.requests import Choices, build_request, check_choices
from bot.model_registry.servers import allowed_ids, change_models, choose, find, server_default, server_models

__all__ = [
    "MAX_COUNT",
    "Choices",
    "Kind",
    "ModelDescription",
    "ModelRegistry",
    "RegistryError",
    "allowed_ids",
    "build_request",
    "change_models",
    "check_choices",
    "choose",
    "find",
    "load_registry",
    "parse_models",
    "server_default",
    "server_models",
    "vetted_models",
]
