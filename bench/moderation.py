"""Benchmark: banned-word matching at its limits (a 2,048-character prompt, 200 terms).

    .venv/bin/python -m bench.moderation

Prints the median time of `find_banned` for an ordinary prompt and for
prompts built to produce as many candidates as possible, against 200 random
terms and against 200 terms made only of stand-in letters (the worst list).
"""

from __future__ import annotations

import random
import statistics
import string
import time

from cogs.moderation import TERM_MAX, TERMS_MAX, clean_term, find_banned

PROMPT_MAX = 2048
ROUNDS = 50


def _median_ms(prompt: str, terms: list[str]) -> float:
    find_banned(prompt, terms)  # term parsing is cached per term, as in the bot
    samples = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        find_banned(prompt, terms)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def main() -> None:
    rng = random.Random(7)
    words = [clean_term("".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 12)))) for _ in range(TERMS_MAX)]
    long_words = [
        clean_term(" ".join("".join(rng.choices(string.ascii_lowercase, k=9)) for _ in range(10)))
        for _ in range(TERMS_MAX)
    ]
    stand_ins = [clean_term("i" + "l" * (n % (TERM_MAX - 2))) for n in range(TERMS_MAX)]
    prompts = {
        "ordinary": ("a watercolour fox in a misty forest at dawn, soft light, 4k, " * 40)[:PROMPT_MAX],
        "cyrillic look-alikes": ("\u0430 \u0440\u043e\u0441\u0435 " * 400)[:PROMPT_MAX],
        "spaced letters": ("i " * PROMPT_MAX)[:PROMPT_MAX],
        "split pairs": ("ii " * PROMPT_MAX)[:PROMPT_MAX],
        "symbols": ("!$@" * PROMPT_MAX)[:PROMPT_MAX],
    }
    print(f"find_banned, {PROMPT_MAX}-character prompts, {TERMS_MAX} terms, median of {ROUNDS}:")
    for list_name, terms in (("random words", words), ("10-word phrases", long_words), ("i/l only", stand_ins)):
        for prompt_name, prompt in prompts.items():
            print(f"  {list_name:16} {prompt_name:22} {_median_ms(prompt, terms):7.2f} ms")


if __name__ == "__main__":
    main()
