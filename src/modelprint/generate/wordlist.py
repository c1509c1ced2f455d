"""Word lists and seeded randomness shared by the strategies."""
from __future__ import annotations

import functools
from importlib import resources
from typing import Sequence

from modelprint.generate.seeds import rng_for  # noqa: F401  (re-exported: strategies import it from here)


@functools.lru_cache(maxsize=None)
def _lines(name: str) -> tuple[str, ...]:
    text = resources.files("modelprint.data").joinpath(name).read_text(encoding="utf-8")
    return tuple(ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#"))


def words() -> tuple[str, ...]:
    """3000 common lowercase English words (see the header of data/words.txt)."""
    return _lines("words.txt")


def topics() -> tuple[str, ...]:
    """Seed topics that make model-written keys diverse."""
    return _lines("topics.txt")


def random_words(seed: int, stream: int, count: int) -> str:
    pool = words()
    rng = rng_for(seed, 0x57, stream)
    return " ".join(pool[i] for i in rng.integers(0, len(pool), size=count))


def prefix_free(tokenizer, candidates: Sequence[str], leading_space: bool = False) -> list[tuple[str, list[int]]]:
    """The candidates (with their token ids) whose ids are no proper prefix of another candidate's ids.

    In such a pool a model's answer begins with at most one candidate, which is what turns
    "the response was drawn uniformly from the pool" into a false-positive bound.
    """
    encoded = {}
    for word in dict.fromkeys(candidates):
        ids = tuple(tokenizer(" " + word if leading_space else word, add_special_tokens=False)["input_ids"])
        if ids:
            encoded.setdefault(ids, word)
    proper = {ids[:cut] for ids in encoded for cut in range(1, len(ids))}
    return [(word, list(ids)) for ids, word in encoded.items() if ids not in proper]
