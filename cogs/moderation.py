"""Banned words and phrases, matched the way a determined member would try to slip past them.

A list that `n.u.d.e` or `nud3` walks through protects nobody, and a list that
refuses "a glass of water" because "ass" is banned is switched off by the
admin within a day. So matching is two steps, each aimed at one kind of trick:

1. `normalise` (the prompt and, when stored, each term) removes what does not
   change how the text *looks*: NFKC (full-width `ｂａｄ`, ligatures, math
   letters), every invisible or blank-rendering character (Unicode's
   Default_Ignorable_Code_Point set: zero-width spaces and joiners, soft hyphen,
   bidi marks, variation selectors, tag characters, the combining grapheme
   joiner, the Hangul fillers, the Mongolian vowel separator; plus the braille
   blank U+2800 and control characters), case (`ß` is `ss`), accents and other
   combining marks, and letters from other scripts that look like Latin ones
   (Cyrillic `а`, Greek `ο`, Cherokee `Ꭺ`: Unicode's confusables.txt through the
   `confusable-homoglyphs` package, chosen over transliterators such as
   anyascii because those map Cyrillic `р` to "r" where the eye reads "p").
2. Matching reads the prompt with its separators taken out and every stand-in
   folded to one letter (`@`/`4` → a, `3` → e, `1`/`!`/`l` → i, `0` → o,
   `$`/`5` → s, `7` → t; I and l look the same in Discord's font), looks for
   each term in that, then checks each candidate against the original text:
   punctuation or `_` may sit between letters (`n.u.d.e`, `nu-de`, `n_u_d_e`),
   spaces only when *every* letter stands alone (`n u d e`), and a plain
   plural (`-s`, `-es`) still counts.

What keeps ordinary prompts working: a match must not touch a letter on either
side (digits, `_` and punctuation do not count as letters, so `nude123` and
`_nude` are caught while "glass", "class", "assistant", "Scunthorpe" and
"Essex" pass), "shaped as s" does not spell "ass" (the space splits only
one gap), and a match made only of digits ("455", "4 5 5") is a number, not a
word. There is no regular expression: candidates come from plain string
comparisons and each is checked in constant time from prefix sums, so a
2,048-character prompt against 200 terms takes a few milliseconds and no
prompt can make it slow (`python -m bench.moderation` prints the figures).
Words split by spaces into chunks ("nu de") are not caught, and neither is
text in scripts written without spaces (the whole-word rule needs them).

Terms stored before this module folded confusables are folded again when the
pattern is built (normalising is idempotent), so old lists benefit at once.
The refusal never repeats the matched text: the member knows what they typed,
and the channel should not see it.
"""

from __future__ import annotations

import functools
import itertools
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from confusable_homoglyphs import confusables

BANNED_REFUSAL = (
    "This server doesn't allow a word or phrase in that prompt, so nothing was started. "
    "Please rephrase it and try again."
)
TERM_MAX = 100
TERMS_MAX = 200

# Default_Ignorable_Code_Point (Unicode's DerivedCoreProperties.txt): characters that render as
# nothing. Some are letters (the Hangul fillers) or marks (variation selectors), so the Cf category
# alone misses them.
_IGNORABLE_RANGES = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
# Blank-looking but not default-ignorable: the braille blank and the musical null notehead.
_BLANK_LOOKING = frozenset({0x2800, 0x1D159})
_DROPPED_CATEGORIES = frozenset({"Cf", "Mn", "Me"})

# What members write instead of a letter, folded to one canonical letter per stand-in. I and l look
# the same in the font Discord uses (and Unicode maps Cyrillic І to l), so both fold to "i" as well.
_CANONICAL = str.maketrans(
    {"@": "a", "4": "a", "3": "e", "1": "i", "!": "i", "l": "i", "0": "o", "$": "s", "5": "s", "7": "t"}
)
_STAND_IN_SYMBOLS = frozenset("@$!")


def _invisible(code: int) -> bool:
    return code in _BLANK_LOOKING or any(low <= code <= high for low, high in _IGNORABLE_RANGES)


@functools.lru_cache(maxsize=8192)
def _fold_char(char: str) -> str:
    """One character of normalised text: dropped when invisible, a Latin look-alike replaced by its letter."""
    code = ord(char)
    if code < 0x80:
        return char if char.isprintable() or char.isspace() else ""
    if _invisible(code) or unicodedata.category(char) in _DROPPED_CATEGORIES:
        return ""
    if unicodedata.category(char) == "Cc":
        return " " if char.isspace() else ""
    found = confusables.is_confusable(char, greedy=True, preferred_aliases=["latin"])
    twins: list[str] = [
        glyph["c"]
        for entry in found or ()
        for glyph in entry["homoglyphs"]
        if len(glyph["c"]) == 1 and glyph["c"].isascii() and glyph["c"].isalnum()
    ]
    # Cyrillic `І` looks like both I and l; its case says which one the writer meant.
    same_case = [twin for twin in twins if twin.isupper() == char.isupper()]
    return (same_case or twins or [char])[0]


def normalise(text: str) -> str:
    """`text` folded for comparison: compatibility forms, nothing invisible, no case, no accents, Latin look-alikes."""
    # Look-alikes are read before case folding (Greek `Ν` looks like N, its lower case `ν` like v)
    # and again after it (Cyrillic `а` only has a Latin twin in lower case).
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text))
    text = "".join(_fold_char(char) for char in text).casefold()
    text = "".join(_fold_char(char) for char in unicodedata.normalize("NFKD", text))
    return unicodedata.normalize("NFC", text)


def clean_term(term: str) -> str:
    """A term as stored: normalised, whitespace collapsed; empty when nothing word-like is left."""
    words = normalise(term).split()
    return " ".join(words) if any(char.isalnum() for char in "".join(words)) else ""


def _kept(char: str) -> bool:
    """Letters, digits and stand-in symbols carry a word; everything else only separates."""
    return char.isalnum() or char in _STAND_IN_SYMBOLS


@dataclass(frozen=True, slots=True)
class _Term:
    """A stored term as the matcher reads it: its words, canonical, with separators taken out."""

    text: str  # the words run together
    word_ends: tuple[int, ...]  # where each word ends in `text`


@functools.lru_cache(maxsize=4096)
def _parse(term: str) -> _Term | None:
    words = ["".join(c for c in word if _kept(c)).translate(_CANONICAL) for word in normalise(term).split()]
    words = [word for word in words if word]
    if not words:
        return None
    ends = list(itertools.accumulate(len(word) for word in words))
    return _Term("".join(words), tuple(ends))


def _has_space(gap: str) -> bool:
    return bool(gap) and (gap.isspace() or any(char.isspace() for char in gap))


class _View:
    """A normalised prompt with its separators taken out, and what each kept character had around it.

    Everything a candidate match needs is precomputed as per-character flags and prefix sums, so
    checking one candidate costs the same whatever its length: a prompt built to produce many
    candidates (a run of "i i i ...") stays linear in the prompt times the list.
    """

    def __init__(self, prompt: str) -> None:
        text = normalise(prompt)
        where = [index for index, char in enumerate(text) if _kept(char)]
        self.solid = "".join(text[index] for index in where).translate(_CANONICAL)
        alpha = [False, *(char.isalpha() for char in text), False]  # alpha[i + 1]: is text[i] a letter
        self.starts = [k for k, index in enumerate(where) if not alpha[index]]
        self.end_ok = [not alpha[index + 2] for index in where]
        self.digits = list(itertools.accumulate((text[index].isdigit() for index in where), initial=0))
        gaps = [text[left + 1 : right] for left, right in itertools.pairwise(where)]
        self.empty_gaps = list(itertools.accumulate((not gap for gap in gaps), initial=0))
        self.spaced_gaps = list(itertools.accumulate(map(_has_space, gaps), initial=0))

    def matches(self, term: _Term, start: int) -> bool:
        """Whether `term` at `start` of the solid text is a real use of it, plain or plural."""
        if not self.solid.startswith(term.text, start):
            return False
        end = start + len(term.text)
        return (
            self._whole(term, start, end)
            or (self.solid.startswith("s", end) and self._whole(term, start, end + 1))
            or (self.solid.startswith("es", end) and self._whole(term, start, end + 2))
        )

    def _whole(self, term: _Term, start: int, end: int) -> bool:
        if not self.end_ok[end - 1]:
            return False  # part of a longer word: "glass", "assistant"
        if self.digits[end] - self.digits[start] == end - start:
            return False  # "455" is a number, not a disguised word
        word_start = start
        for word_end in (*(start + offset for offset in term.word_ends[:-1]), end):
            if not self._one_word(word_start, word_end):
                return False
            word_start = word_end
        return True

    def _one_word(self, first: int, end: int) -> bool:
        """Solid (punctuation between letters is fine: n.u.d.e) or every letter standing alone (n u d e)."""
        last_gap = max(end - 1, first)
        empty = self.empty_gaps[last_gap] - self.empty_gaps[first]
        spaced = self.spaced_gaps[last_gap] - self.spaced_gaps[first]
        return empty == 0 or spaced == 0


def find_banned(prompt: str, terms: Iterable[str]) -> bool:
    """Whether the prompt contains any of the (stored, normalised) terms, however it is disguised."""
    by_first: dict[str, list[_Term]] = {}
    for term in map(_parse, terms):
        if term is not None:
            by_first.setdefault(term.text[0], []).append(term)
    if not by_first:
        return False
    view = _View(prompt)
    return any(view.matches(term, start) for start in view.starts for term in by_first.get(view.solid[start], ()))
