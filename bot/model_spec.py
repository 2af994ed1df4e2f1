"""What every model shares: the bot's aspect ratios, the prompt and seed rules, and the error a refusal raises.

Which of these a given model takes, and under which field names, is its
description's business (bot/model_registry, docs/models.md).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

SEED_MAX = 2**31 - 1
# The seed stored for a job whose model takes none: shown nowhere, sent nowhere, and kept by rerolls.
NO_SEED = -1

# Not published for ImagineArt 1.5; RunComfy's Flux pages cap prompts at 2048
# characters, and Discord's string options allow up to 6000. The lower one wins.
PROMPT_MAX = 2048


class InvalidInputError(ValueError):
    """An input a user typed is not acceptable; the text says which one and what is allowed."""

    def __init__(self, option: str, message: str) -> None:
        self.option = option
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class AspectRatio:
    value: str
    label: str

    @property
    def size(self) -> tuple[int, int]:
        """The pixel size ImagineArt 1.5 renders for this ratio (about 4 MP, 2048 on the short side of 1:1)."""
        return RENDER_SIZES[self.value]

    @property
    def choice_name(self) -> str:
        return f"{self.value} · {self.label}"


ASPECT_RATIOS: tuple[AspectRatio, ...] = (
    AspectRatio("1:1", "square"),
    AspectRatio("16:9", "landscape"),
    AspectRatio("9:16", "portrait"),
    AspectRatio("4:3", "classic landscape"),
    AspectRatio("3:4", "classic portrait"),
    AspectRatio("3:2", "photo landscape"),
    AspectRatio("2:3", "photo portrait"),
    AspectRatio("3:1", "panorama"),
    AspectRatio("1:3", "tall banner"),
)
RATIO_VALUES: tuple[str, ...] = tuple(ratio.value for ratio in ASPECT_RATIOS)
DEFAULT_RATIO = "1:1"

# 1:1 and 16:9 are the sizes ImagineArt 1.5 is reported to render; the others
# keep roughly the same pixel count at their true proportions.
RENDER_SIZES: dict[str, tuple[int, int]] = {
    "1:1": (2048, 2048),
    "16:9": (2560, 1440),
    "9:16": (1440, 2560),
    "4:3": (2368, 1776),
    "3:4": (1776, 2368),
    "3:2": (2496, 1664),
    "2:3": (1664, 2496),
    "3:1": (3504, 1168),
    "1:3": (1168, 3504),
}


def ratio_value(ratio: str) -> float:
    """Width divided by height of a `W:H` string."""
    width, height = ratio.split(":")
    return int(width) / int(height)


def clean_prompt(prompt: str) -> str:
    """The prompt as sent upstream: stripped, refused when empty or too long."""
    text = prompt.strip()
    if not any(char.isprintable() and not char.isspace() for char in text):  # zero-width characters only, too
        raise InvalidInputError("prompt", "The prompt is empty: describe the image you want.")
    if len(text) > PROMPT_MAX:
        raise InvalidInputError("prompt", f"The prompt is {len(text):,} characters long; the limit is {PROMPT_MAX:,}.")
    return text


def check_ratio(ratio: str) -> str:
    if ratio not in RATIO_VALUES:
        raise InvalidInputError(
            "aspect_ratio", f"'{ratio}' is not an aspect ratio; use one of {', '.join(RATIO_VALUES)}."
        )
    return ratio


def check_seed(seed: int | None, most: int = SEED_MAX) -> int:
    """The given seed, or a fresh random one from 0 to `most` (the model's largest), so every image can be
    reproduced."""
    if seed is None:
        return secrets.randbelow(most + 1)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= most:
        raise InvalidInputError("seed", f"The seed must be a whole number from 0 to {most:,}.")
    return seed
