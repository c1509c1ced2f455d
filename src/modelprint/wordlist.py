"""Shipped word lists (``modelprint/data``) and the prefix-free word pool: a ground-floor kernel.

generate, schemes, verify (pool bounds), embed and stress all draw on these lists, so they live below the stages."""
from __future__ import annotations

import functools
import hashlib
import json
from importlib import resources
from typing import NamedTuple, Sequence

from modelprint.seeds import rng_for  # noqa: F401  (re-exported: strategies import it from here)

from modelprint.matching import first_word, normalize_text, pool_bounds


@functools.lru_cache(maxsize=None)
def data_lines(name: str) -> tuple[str, ...]:
    """The non-empty, non-comment lines of the shipped data file ``modelprint/data/<name>`` (cached)."""
    text = resources.files("modelprint.data").joinpath(name).read_text(encoding="utf-8")
    return tuple(ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#"))


def words() -> tuple[str, ...]:
    """3000 common lowercase English words (see the header of data/words.txt)."""
    return data_lines("words.txt")


def topics() -> tuple[str, ...]:
    """Seed topics that make model-written keys diverse."""
    return data_lines("topics.txt")


def random_words(seed: int, stream: int, count: int) -> str:
    pool = words()
    rng = rng_for(seed, 0x57, stream)
    return " ".join(pool[i] for i in rng.integers(0, len(pool), size=count))


POOL_NAME = "words-prefix-free-v1"


class WordPool(NamedTuple):
    """Words with their ids as they start a response (``first``) and after a space (``later``)."""

    words: list[str]
    first: list[list[int]]
    later: list[list[int]]

    @property
    def digest(self) -> str:
        """What a set records so verify can check it rebuilt the same pool (public: the word list is shipped)."""
        text = json.dumps([self.words, self.first, self.later], separators=(",", ":"))
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _drop_proper_prefixes(items: dict[str, tuple]) -> set[str]:
    """Words whose key equals an earlier word's or is a proper prefix of another word's key."""
    seen: dict[tuple, str] = {}
    drop = set()
    for word, key in items.items():
        if key in seen or not key:
            drop.add(word)
        else:
            seen[key] = word
    prefixes = {key[:cut] for key in seen for cut in range(1, len(key))}
    return drop | {word for key, word in seen.items() if key in prefixes}


@functools.lru_cache(maxsize=8)
def _word_pool(tokenizer) -> WordPool:
    candidates = [w for w in dict.fromkeys(words()) if first_word(w) == w == normalize_text(w)]
    text = {w: tuple(w) for w in candidates}
    first = {w: tuple(tokenizer(w, add_special_tokens=False)["input_ids"]) for w in candidates}
    later = {w: tuple(tokenizer(" " + w, add_special_tokens=False)["input_ids"]) for w in candidates}
    drop = _drop_proper_prefixes(text) | _drop_proper_prefixes(first) | _drop_proper_prefixes(later)
    kept = [w for w in candidates if w not in drop]
    return WordPool(kept, [list(first[w]) for w in kept], [list(later[w]) for w in kept])


def word_pool(tokenizer) -> WordPool:
    """The shipped words that are prefix-free as every comparison sees them.

    No kept word's text, first word, ids (as a response starts) or ids after a space is a prefix of another's,
    so one fixed answer begins with at most one pool word in every space: a word drawn uniformly from the pool
    matches it with probability 1/|pool|. Only the first-token groups remain (``ids-prefix``), which
    :func:`modelprint.matching.pool_bounds` counts.
    """
    return _word_pool(tokenizer)


def pool_meta(pool, count: int) -> dict:
    """What a pool-drawn response records: the pool's identity and its bounds for ``count`` words."""
    return {"words": count, "pool": {"name": POOL_NAME, "size": len(pool.words), "digest": pool.digest},
            "bounds": pool_bounds(pool.first, pool.later, pool.words, count)}


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
