"""Banned words and phrases: matched the way a determined member would try to slip past them.

Both the prompt and each banned term go through the same `normalise`:
NFKC first (full-width `ｂａｄ` and ligatures become plain letters), then
format characters (Unicode category Cf: zero-width spaces and joiners, soft
hyphens, bidi marks) are dropped, case is folded (`ß` matches `ss`), and
accents are stripped (NFKD, then combining marks dropped), so `Bäd` matches
`bad`. A term matches only as whole words (`ass` does not match `class`), and a
phrase matches across any run of whitespace.

The refusal never repeats the matched text: the member knows what they typed,
and the channel should not see it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

BANNED_REFUSAL = (
    "This server doesn't allow a word or phrase in that prompt, so nothing was started. "
    "Please rephrase it and try again."
)
TERM_MAX = 100
TERMS_MAX = 200


def normalise(text: str) -> str:
    """`text` folded for comparison: compatibility forms, no format characters, no case, no accents."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(char for char in text if unicodedata.category(char) != "Cf")
    text = unicodedata.normalize("NFKD", text.casefold())
    text = "".join(char for char in text if not unicodedata.combining(char))
    return unicodedata.normalize("NFC", text)


def clean_term(term: str) -> str:
    """A term as stored: normalised, whitespace collapsed; empty when nothing word-like is left."""
    words = normalise(term).split()
    return " ".join(words) if any(char.isalnum() for char in "".join(words)) else ""


def _pattern(term: str) -> str:
    words = [re.escape(word) for word in term.split()]
    return r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)"


def find_banned(prompt: str, terms: Iterable[str]) -> bool:
    """Whether the prompt contains any of the (stored, normalised) terms as whole words."""
    patterns = [_pattern(term) for term in terms if term]
    if not patterns:
        return False
    return re.search("|".join(patterns), normalise(prompt)) is not None
