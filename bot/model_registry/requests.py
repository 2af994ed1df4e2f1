"""A member's choices checked against a model's description, and the request body built from both.

The only place that turns a job into the JSON RunComfy receives: a model is
supported by describing it, never by code of its own. Refusals are
`InvalidInputError`s whose text a member reads as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.model_registry.description import ModelDescription
from bot.model_spec import InvalidInputError


@dataclass(frozen=True, slots=True)
class Choices:
    """What a member asked for, before it is checked against a model (None: not given)."""

    ratio: str | None = None
    seed: int | None = None
    count: int | None = None
    image: bool = False
    prompt: str = ""  # as cleaned (clean_prompt checked it against the longest any model takes)


def check_choices(model: ModelDescription, choices: Choices) -> None:
    """Refuse, in one sentence, any option `model` does not support, before anything is written or spent."""
    name = model.name
    if len(choices.prompt) > model.inputs.prompt_max:
        raise InvalidInputError(
            "prompt",
            f"The prompt is {len(choices.prompt):,} characters long; {name} takes at most {model.inputs.prompt_max:,}.",
        )
    if choices.image and not model.edits:
        raise InvalidInputError("image", f"{name} makes images from text only; pick an edit model to change an image.")
    if model.edits and not choices.image:
        raise InvalidInputError(
            "image", f"{name} changes an image: attach one, or use **Edit image** on a message with a picture."
        )
    if choices.ratio is not None and choices.ratio not in model.ratios:
        allowed = ", ".join(model.ratios) or "none (it picks the shape itself)"
        raise InvalidInputError("aspect_ratio", f"{name} can't make {choices.ratio}; its aspect ratios: {allowed}.")
    if choices.seed is not None and model.inputs.seed is None:
        raise InvalidInputError("seed", f"{name} takes no seed; leave the seed out.")
    if choices.seed is not None and model.inputs.seed is not None and choices.seed > model.inputs.seed.max:
        raise InvalidInputError("seed", f"{name} takes seeds from 0 to {model.inputs.seed.max:,}.")
    if choices.count is not None and not 1 <= choices.count <= model.max_count:
        most = "one image" if model.max_count == 1 else f"1 to {model.max_count} images"
        raise InvalidInputError("count", f"{name} makes {most} per request.")


def build_request(
    model: ModelDescription,
    *,
    prompt: str,
    ratio: str | None,
    seed: int,
    count: int = 1,
    image_url: str | None = None,
) -> dict[str, Any]:
    """The JSON body for `POST /v1/models/{model.id}`: only the fields the description names.

    A field is left out when the member's choice is the model's own default
    anyway (count 1) or the model has no such input, so a model never meets a
    field it does not know (RunComfy answers 422 to unknown fields).
    """
    inputs = model.inputs
    body: dict[str, Any] = dict(inputs.fixed)
    body[inputs.prompt] = prompt
    if inputs.image is not None:
        if image_url is None:
            raise ValueError(f"{model.id} needs an input image")
        body[inputs.image.field] = [image_url] if inputs.image.list else image_url
    if inputs.aspect_ratio is not None:
        shape = inputs.aspect_ratio
        body[shape.field] = shape.values.get(ratio or shape.default, shape.values[shape.default])
    if inputs.seed is not None:
        body[inputs.seed.field] = seed
    if inputs.count is not None and count > 1:
        body[inputs.count.field] = count
    return body
