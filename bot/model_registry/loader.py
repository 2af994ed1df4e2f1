"""The model registry: the vetted descriptions shipped with the bot, plus the operator's own file.

Both are TOML (`tomllib`, in the standard library) validated by the pydantic
descriptions, so a typo in the operator's file stops the start with one
sentence naming the model and the field, instead of a 422 on a member's first
image. An operator's entry with a vetted id replaces the vetted one whole.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bot.model_registry.description import Kind, ModelDescription

VETTED = "vetted.toml"


class RegistryError(ValueError):
    """The models file cannot be used; the text says where and why (shown to the operator, exit status 2)."""


class ModelRegistry:
    """Every model the bot knows, in order; `offered` ones are those servers may choose from."""

    def __init__(self, models: Mapping[str, ModelDescription], default: str) -> None:
        self._models = dict(models)
        chosen = self._models.get(default)
        if chosen is None or not chosen.offered:
            raise RegistryError(
                f"RUNCOMFY_MODEL {default!r} is not an offered model of the registry; "
                f"offered: {', '.join(model.id for model in self.offered) or 'none'}"
            )
        if chosen.edits:
            raise RegistryError(f"RUNCOMFY_MODEL {default!r} edits images; the default must make images from text")
        self.default = chosen

    def __iter__(self) -> Iterator[ModelDescription]:
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)

    def get(self, model_id: str) -> ModelDescription | None:
        return self._models.get(model_id)

    @property
    def offered(self) -> list[ModelDescription]:
        return [model for model in self._models.values() if model.offered]

    def name(self, model_id: str) -> str:
        """The name members read for a model id; the id itself for a model the registry no longer has."""
        model = self._models.get(model_id)
        return model.name if model is not None else model_id

    def first(self, kind: Kind, among: list[str] | None = None) -> ModelDescription | None:
        """The first offered model of this kind (among these ids, in their order, when given)."""
        ids = among if among is not None else [model.id for model in self.offered]
        for model_id in ids:
            model = self._models.get(model_id)
            if model is not None and model.offered and model.kind is kind:
                return model
        return None


def parse_models(text: str, source: str) -> list[ModelDescription]:
    """The `[[model]]` tables of one TOML text, validated; RegistryError says which entry is wrong and why."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise RegistryError(f"{source}: not valid TOML ({error})") from None
    unknown = sorted(set(document) - {"model"})
    if unknown:
        raise RegistryError(f"{source}: unknown top-level key(s) {', '.join(unknown)}; models are [[model]] tables")
    entries: Any = document.get("model", [])
    if not isinstance(entries, list):
        raise RegistryError(f"{source}: `model` must be an array of tables ([[model]])")
    models: list[ModelDescription] = []
    for index, entry in enumerate(entries, start=1):
        label = entry.get("id", f"model #{index}") if isinstance(entry, dict) else f"model #{index}"
        try:
            models.append(ModelDescription.model_validate(entry))
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in item['loc']) or 'entry'}: {item['msg']}" for item in error.errors()
            )
            raise RegistryError(f"{source}: {label}: {problems}") from None
    ids = [model.id for model in models]
    doubled = sorted({model_id for model_id in ids if ids.count(model_id) > 1})
    if doubled:
        raise RegistryError(f"{source}: model(s) described twice: {', '.join(doubled)}")
    return models


def vetted_models() -> list[ModelDescription]:
    text = resources.files("bot.model_registry").joinpath(VETTED).read_text(encoding="utf-8")
    return parse_models(text, VETTED)


def load_registry(default: str, operator_file: Path | None = None) -> ModelRegistry:
    """The vetted models, each replaced or joined by the operator's file's (when given), with `default` first."""
    models = {model.id: model for model in vetted_models()}
    if operator_file is not None:
        try:
            text = Path(operator_file).read_text(encoding="utf-8")
        except OSError as error:
            raise RegistryError(f"{operator_file}: cannot read the models file ({error.strerror})") from None
        models.update((model.id, model) for model in parse_models(text, str(operator_file)))
    return ModelRegistry(models, default)
