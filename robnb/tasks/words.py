"""Pinned word lists for the procedural tasks (from the english-words wheel, no hub)."""

from __future__ import annotations

import random
from functools import lru_cache

WORDLIST_SOURCE = "english-words==2.0.2 web2 (lower, alpha)"
PAPER_WORDLIST_SIZE = 25_000


@lru_cache(maxsize=4)
def english_words(n: int = PAPER_WORDLIST_SIZE, seed: int = 0,
                  min_len: int = 3, max_len: int = 12) -> tuple[str, ...]:
    """A fixed sample of ~25k English words, like the paper's (source undocumented there)."""
    from english_words import get_english_words_set

    pool = sorted(w for w in get_english_words_set(["web2"], lower=True, alpha=True)
                  if min_len <= len(w) <= max_len)
    rng = random.Random(seed)
    return tuple(sorted(rng.sample(pool, min(n, len(pool)))))
