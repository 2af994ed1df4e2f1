"""Banned words: the disguises members use are refused, and ordinary prompts that merely contain the letters pass."""

import pytest

from cogs.moderation import TERMS_MAX, clean_term, find_banned, normalise

# The list a server might keep; stored as the admin command stores it.
TERMS = [clean_term(term) for term in ("nude", "ass", "porn", "sex", "kill", "tits", "cunt", "slut", "evil wizard")]


@pytest.mark.parametrize(
    ("prompt", "trick"),
    [
        ("a NUDE woman", "case"),
        ("a ｎｕｄｅ woman", "full-width letters"),
        ("a 𝐧𝐮𝐝𝐞 woman", "mathematical bold letters"),
        ("a ñúdë woman", "accents"),
        ("a n̶u̶d̶e̶ woman", "combining strike-through"),
        ("\u0440orn star", "Cyrillic р for p"),
        ("\u0430ss", "Cyrillic а for a"),
        ("p\u03bfrn", "Greek ο for o"),
        ("\u039d\u054dDE", "Greek Ν and Armenian Ս in capitals"),
        ("\u0405EX", "Cyrillic Ѕ for S"),
        ("\u13aass", "Cherokee Ꭺ for A"),
        ("n\u057dde", "Armenian ս for u"),
        ("\u0422\u0406\u0422\u0405", "Cyrillic capitals ТІТЅ"),
        ("nud3 beach", "3 for e"),
        ("p0rn", "0 for o"),
        ("@ss", "@ for a"),
        ("4ss", "4 for a"),
        ("a$$", "$ for s"),
        ("5ex", "5 for s"),
        ("k1ll him", "1 for i"),
        ("ki!!", "! for l"),
        ("7its", "7 for t"),
        ("sIut", "capital I for l (same glyph in Discord's font)"),
        ("n u d e", "letters split by spaces"),
        ("n.u.d.e", "letters split by dots"),
        ("n-u-d-e", "letters split by hyphens"),
        ("n_u_d_e", "letters split by underscores"),
        ("nu.de", "one dot inside"),
        ("n🍑u🍑d🍑e", "emoji between letters"),
        ("n . u . d . e", "dots and spaces"),
        ("nude_", "underscore after"),
        ("_nude", "underscore before"),
        ("nude123", "digits after"),
        ("123nude", "digits before"),
        ("nudes", "plural -s"),
        ("asses", "plural -es"),
        ("n\u200bude", "zero-width space"),
        ("nu\u00adde", "soft hyphen"),
        ("\u202enude\u202c", "bidi override"),
        ("nu\u2800de", "braille pattern blank"),
        ("nu\u3164de", "Hangul filler"),
        ("nu\u115fde", "Hangul choseong filler"),
        ("nu\u1160de", "Hangul jungseong filler"),
        ("nu\uffa0de", "half-width Hangul filler"),
        ("nu\u180ede", "Mongolian vowel separator"),
        ("nu\u034fde", "combining grapheme joiner"),
        ("nu\ufe0fde", "variation selector"),
        ("nu\U000e0041de", "tag character"),
        ("nu\u2060de", "word joiner"),
        ("an ev1l\n\tWIZARD", "phrase across whitespace with a digit"),
        ("an e v i l w i z a r d", "phrase fully spaced"),
        ("an evil_wizard", "phrase joined by underscore"),
    ],
)
def test_disguised_banned_words_are_refused(prompt: str, trick: str) -> None:
    assert find_banned(prompt, TERMS), trick


@pytest.mark.parametrize(
    "prompt",
    [
        "a glass of water",
        "class photo of the assistant",
        "Scunthorpe United at dusk",
        "a cottage in Essex",
        "a nice sunset over the sea",
        "passion fruit on a bass guitar",
        "Massachusetts harbour",
        "a letter shaped as s",
        "skill tree, kilt, killer whale",
        "title card, petite kitten",
        "a 1080p render, 455 lumens, $5 bill",
        "4 5 5 on a scoreboard",
        "evil old wizard",
        "sexton beetle in Middlesex",
        "a popcorn stand, a unicorn, an acorn",
    ],
)
def test_ordinary_prompts_that_contain_the_letters_pass(prompt: str) -> None:
    assert not find_banned(prompt, TERMS)


@pytest.mark.parametrize("prompt", ["a dragonfly", "snapdragon", "drag on", "dragonets"])
def test_only_whole_words_match(prompt: str) -> None:
    assert not find_banned(prompt, [clean_term("dragon")])


def test_a_number_next_to_a_real_match_does_not_hide_it() -> None:
    assert find_banned("455 ass", [clean_term("ass")])
    assert find_banned("4554ss", [clean_term("ass")])  # "455" is a number; the "4ss" right after it is not
    assert not find_banned("4554", [clean_term("ass")])


def test_terms_are_stored_normalised_and_blank_ones_dropped() -> None:
    assert clean_term("  Évil   WIZARD ") == "evil wizard"
    assert clean_term("Straße") == "strasse"
    assert clean_term("\u200b ") == ""
    assert clean_term("\u2800\u3164") == ""
    assert clean_term("...") == ""
    assert clean_term("\u0440\u043ern") == "porn"  # an admin pasting a Cyrillic disguise bans the word itself
    assert find_banned("STRASSE", [clean_term("straße")])


def test_terms_stored_before_confusables_were_folded_still_match() -> None:
    old = "\u0440orn"  # what clean_term kept before it knew look-alikes
    assert find_banned("porn", [old])
    assert find_banned("\u0440orn", [old])


def test_normalise_folds_compatibility_forms_and_look_alikes() -> None:
    assert normalise("ﬁne Ｃａｆé") == "fine cafe"
    assert normalise("\u0421\u0410\u0422") == "cat"
    assert normalise("a\u200b\u2800\U000e0020b") == "ab"
    assert not find_banned("anything", [])
    assert not find_banned("anything", ["", "   "])


def test_non_latin_terms_still_match_their_own_script() -> None:
    assert find_banned("это плохо", [clean_term("плохо")])
    assert not find_banned("это хорошо", [clean_term("плохо")])


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("!" * 2048, True),
        ("!1" * 1024, True),
        ("i " * 1024, True),
        (("!" * 30 + " ") * 66, True),
        ("i" * 2048, False),
        ("$@" * 1024, False),
        ("i" * 2047 + "!", False),
    ],
)
def test_runs_of_stand_ins_are_answered(prompt: str, expected: bool) -> None:
    """The worst case for a backtracking regex (gaps and letters that could both take a "!"): it must answer,
    and answer right; a catastrophic pattern would hang here until pytest's timeout fails the test."""
    terms = [clean_term(f"ill{'i' * n}l") for n in range(TERMS_MAX)]
    assert find_banned(prompt, terms) is expected
