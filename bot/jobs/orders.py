"""What a new job asks for, built the same way for `/imagine`, an edit, a remix and a reroll.

Each model decides what a job carries: a seed only where the model takes one
(else `NO_SEED`, shown and sent nowhere), an aspect ratio only among the
model's own, the input image of an edit, and the cost estimate, the model's
base price times the images asked for, written with the job so the
operator's budget counts it at its own model's price.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.model_registry import ModelDescription
from bot.model_spec import NO_SEED, InvalidInputError, check_seed
from storage.models import Job, JobOrigin, NewJob, StoredInput

# An input link must live at least this long when a job is written: it may wait in the server's line first.
INPUT_LIFE_NEEDED = timedelta(minutes=30)
SOURCE_EXPIRED = (
    "The image this edit started from is no longer available from Discord (its link expired), so it can't be "
    "made again. Use **Edit image** on the picture to start a new edit."
)


@dataclass(frozen=True, slots=True)
class EditInput:
    """The image an edit starts from: the URL sent upstream while it lives, and the stored image of the job a
    reroll or remix starts from, which the new job shares; None for a member's new image, read after the job is
    written and given to it before it is confirmed (until then the job `awaits_input`)."""

    url: str
    expires_at: datetime | None
    image: StoredInput | None


def order(
    model: ModelDescription,
    *,
    prompt: str,
    ratio: str | None,
    seed: int | None,
    count: int,
    origin: JobOrigin,
    parent_id: int | None = None,
    exempt: bool = False,
    edit: EditInput | None = None,
) -> NewJob:
    """A new job of `model`; the choices were checked against it already (`check_choices`)."""
    shape = model.inputs.aspect_ratio
    return NewJob(
        model=model.id,
        prompt=prompt,
        aspect_ratio=(ratio or shape.default) if shape is not None else "",
        seed=NO_SEED if model.inputs.seed is None else check_seed(seed, model.inputs.seed.max),
        origin=origin,
        parent_id=parent_id,
        exempt=exempt,
        count=count,
        cost_usd=round(model.price_usd * count, 6),
        input_url=edit.url if edit else None,
        input_expires_at=edit.expires_at if edit else None,
        input=edit.image if edit else None,
    )


def source_input(source: Job, now: datetime) -> EditInput | None:
    """An edit's input, taken again for a reroll or remix (its stored image shared, not copied);
    InvalidInputError when its link no longer lives long enough, or it has no stored image."""
    if source.input_url is None:
        return None
    expired = source.input_expires_at is not None and source.input_expires_at - INPUT_LIFE_NEEDED <= now
    if source.input_image_id is None or expired:
        raise InvalidInputError("image", SOURCE_EXPIRED)
    return EditInput(source.input_url, source.input_expires_at, StoredInput(source.input_image_id))
