import pytest

from bot.model_spec import (
    PROMPT_MAX,
    RATIO_VALUES,
    RENDER_SIZES,
    SEED_MAX,
    InvalidInputError,
    check_ratio,
    check_seed,
    clean_prompt,
    ratio_value,
)


def test_the_nine_documented_ratios() -> None:
    assert set(RATIO_VALUES) == {"1:1", "3:1", "1:3", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3"}


@pytest.mark.parametrize("ratio", RATIO_VALUES)
def test_render_sizes_have_true_proportions(ratio: str) -> None:
    width, height = RENDER_SIZES[ratio]
    assert width / height == pytest.approx(ratio_value(ratio), rel=0.01)


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_empty_prompts_are_refused(prompt: str) -> None:
    with pytest.raises(InvalidInputError, match="empty"):
        clean_prompt(prompt)


def test_long_prompt_is_refused_with_the_numbers() -> None:
    with pytest.raises(InvalidInputError, match="2,048"):
        clean_prompt("x" * (PROMPT_MAX + 1))
    assert clean_prompt("  a fox  ") == "a fox"


def test_seed_bounds_and_random_default() -> None:
    assert check_seed(0) == 0
    assert check_seed(SEED_MAX) == SEED_MAX
    for bad in (-1, SEED_MAX + 1):
        with pytest.raises(InvalidInputError):
            check_seed(bad)
    assert 0 <= check_seed(None) <= SEED_MAX


def test_unknown_ratio_lists_the_allowed_ones() -> None:
    with pytest.raises(InvalidInputError, match="16:9"):
        check_ratio("5:4")
