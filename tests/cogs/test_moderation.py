import pytest

from cogs.moderation import clean_term, find_banned, normalise


@pytest.mark.parametrize(
    ("prompt", "why"),
    [
        ("A DRAGON", "case"),
        ("a Drágön", "accents"),
        ("ａ ｄｒａｇｏｎ", "full-width letters"),
        ("a dr\u200bag\u200con", "zero-width space and non-joiner"),
        ("a d\u00adragon", "soft hyphen"),
        ("a \u202edragon\u202c", "bidi controls"),
        ("the dragon's hoard", "followed by punctuation"),
        ("DRAGON!", "at the edges"),
    ],
)
def test_banned_word_is_found_through_tricks(prompt: str, why: str) -> None:
    assert find_banned(prompt, ["dragon"]), why


@pytest.mark.parametrize("prompt", ["a dragonfly", "snapdragon", "dragons", "drag on"])
def test_only_whole_words_match(prompt: str) -> None:
    assert not find_banned(prompt, ["dragon"])


def test_phrases_match_across_any_whitespace_and_tricks() -> None:
    assert find_banned("an evil\n\tWIZARD", ["evil wizard"])
    assert find_banned("an ｅｖｉｌ wízard", ["evil wizard"])
    assert not find_banned("an evil old wizard", ["evil wizard"])


def test_terms_are_stored_normalised_and_blank_ones_dropped() -> None:
    assert clean_term("  Évil   WIZARD ") == "evil wizard"
    assert clean_term("Straße") == "strasse"
    assert clean_term("\u200b ") == ""
    assert clean_term("...") == ""
    assert find_banned("STRASSE", [clean_term("straße")])


def test_normalise_folds_compatibility_forms() -> None:
    assert normalise("ﬁne Ｃａｆé") == "fine cafe"
    assert not find_banned("anything", [])
