"""One model as the bot knows it: which field takes what, which values are allowed, what an image costs.

RunComfy serves every model on the same `/v1/models/{id}` protocol, but each
model names its inputs its own way (`image_url`, `image_urls`, `images`;
`aspect_ratio` or `size`; `num_images` or `number_of_images`). A description
maps the bot's few notions (prompt, input image, shape, seed, count) onto one
model's fields, so requests are built from it (`bot.model_registry.requests`)
and never by hand per model. Descriptions are read from TOML files
(`vetted.toml`, and the operator's `RUNCOMFY_MODELS_FILE`) and checked here.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bot.model_spec import PROMPT_MAX, RATIO_VALUES, SEED_MAX

MAX_COUNT = 4  # images per job the bot offers at most: one gallery reply, 4 under Discord's 10 files
FieldName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
ModelId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)+$", max_length=200)]
Scalar = str | int | float | bool


class Kind(StrEnum):
    """What a model does with a job: makes an image from text, or changes an image it is given."""

    TEXT_TO_IMAGE = "text-to-image"
    IMAGE_EDIT = "image-edit"


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ImageField(_Strict):
    """Where the input image goes: one URL (`image_url`, `image`) or a list of URLs (`image_urls`, `images`)."""

    field: FieldName
    list: bool = False


class ShapeField(_Strict):
    """The image's shape: an aspect ratio the member picks, sent as the model wants it.

    `values` maps the bot's ratio names (`16:9`) to what the model takes: the
    same text for an `aspect_ratio` enum, or a size such as `1344*768` for a
    `size` field. A TOML list means "the same text".
    """

    field: FieldName
    values: dict[str, str]
    default: str = "1:1"

    @field_validator("values", mode="before")
    @classmethod
    def _list_means_same(cls, value: object) -> object:
        return {item: item for item in value} if isinstance(value, list) else value

    @model_validator(mode="after")
    def _known_ratios(self) -> Self:
        unknown = sorted(set(self.values) - set(RATIO_VALUES))
        if unknown:
            raise ValueError(f"unknown aspect ratio(s) {', '.join(unknown)}; the bot knows {', '.join(RATIO_VALUES)}")
        if not self.values:
            raise ValueError("values lists no aspect ratio")
        if self.default not in self.values:
            raise ValueError(f"default {self.default!r} is not one of the values")
        return self


class SeedField(_Strict):
    field: FieldName = "seed"
    max: int = Field(default=SEED_MAX, ge=1, le=SEED_MAX)


class CountField(_Strict):
    """How many images one request makes (`num_images`, `number_of_images`); the bot offers 1 to `max`."""

    field: FieldName
    max: int = Field(ge=2, le=MAX_COUNT)


class Inputs(_Strict):
    prompt: FieldName = "prompt"
    prompt_max: int = Field(default=PROMPT_MAX, ge=1, le=PROMPT_MAX)
    image: ImageField | None = None
    aspect_ratio: ShapeField | None = None
    seed: SeedField | None = None
    count: CountField | None = None
    fixed: dict[FieldName, Scalar] = Field(default_factory=dict)  # sent as is with every request

    @model_validator(mode="after")
    def _distinct_fields(self) -> Self:
        names = [self.prompt, *self.fixed]
        names += [part.field for part in (self.image, self.aspect_ratio, self.seed, self.count) if part is not None]
        doubled = sorted({name for name in names if names.count(name) > 1})
        if doubled:
            raise ValueError(f"field(s) {', '.join(doubled)} named twice")
        return self

    @property
    def field_names(self) -> frozenset[str]:
        """Every field a request for this model may carry."""
        parts = (self.image, self.aspect_ratio, self.seed, self.count)
        return frozenset([self.prompt, *self.fixed, *(part.field for part in parts if part is not None)])


class ModelDescription(_Strict):
    """One model: its id on RunComfy, how members see it, what it does, its inputs and its base price."""

    id: ModelId
    name: str = Field(min_length=1, max_length=60)
    kind: Kind
    price_usd: float = Field(ge=0, le=100)  # per image, RunComfy's base price: estimates and the budget use it
    inputs: Inputs = Inputs()
    offered: bool = True  # false: known (old jobs still render) but no longer offered to servers

    @model_validator(mode="after")
    def _image_matches_kind(self) -> Self:
        if self.kind is Kind.IMAGE_EDIT and self.inputs.image is None:
            raise ValueError("an image-edit model needs inputs.image")
        if self.kind is Kind.TEXT_TO_IMAGE and self.inputs.image is not None:
            raise ValueError("a text-to-image model takes no inputs.image")
        return self

    @property
    def edits(self) -> bool:
        return self.kind is Kind.IMAGE_EDIT

    @property
    def max_count(self) -> int:
        return self.inputs.count.max if self.inputs.count is not None else 1

    @property
    def ratios(self) -> tuple[str, ...]:
        """The aspect ratios a member may pick, in the bot's usual order (none: the model decides)."""
        shape = self.inputs.aspect_ratio
        return tuple(ratio for ratio in RATIO_VALUES if shape is not None and ratio in shape.values)
