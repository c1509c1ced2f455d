"""What counts as a match, and the null bound of each comparison — one definition for generate, verify and schemes.

A suspect's answer is compared with a secret response in one of two *spaces*:

* ``ids``  — token ids (local weights): ``exact`` = the answer's ids begin with the response's ids;
  ``prefix`` = the same first token.
* ``text`` — text (an endpoint returns text): both sides are normalised by :func:`normalize_text`;
  ``exact`` = the normalised answer begins with the normalised response; ``prefix`` = the same first word
  (the first ``\\w+`` run).

and ``candidate`` mode ranks the recorded Perinucleus candidates by the suspect's next-token probability
(local weights: by token id; an endpoint: by the token *texts* in its returned ``top_logprobs``,
:func:`text_candidate_scores`), ``sample`` mode counts how often the suspect's samples begin with each
candidate (:func:`sample_match`). Both are "is our pick the unique winner among the k candidates" statistics
whose scores depend on the suspect's answer and on each candidate's public data only, so their null bound is
1/k whatever the space (key ``candidate``): colliding texts give equal scores, i.e. ties, which never win.

The null bound of a key is the largest probability, over every *fixed* answer a suspect could give without
our secret, that the answer matches the response our secret randomness drew. For a response drawn from
alternatives a_1..a_n with weights w_j, a fixed answer A matches a_j only if a_j's key (ids, normalised text or
first word) is a prefix of A's — so the matched alternatives form a *chain* in the prefix order and the bound is
the heaviest chain (:func:`chain_bound`); for ``ids-prefix`` it is the heaviest first-token group. A set whose
alternatives are prefix-free in a space has bound max_j w_j there (1/k for k uniform candidates).

Bounds are keyed by :func:`bound_key`: ``ids-exact``, ``ids-prefix``, ``text-exact``, ``text-prefix``,
``candidate``. This module imports nothing from the stages, so every stage can import it.
"""
from __future__ import annotations

import math
import re
from typing import Callable, Hashable, Iterable, Optional, Sequence

import numpy as np

SPACES = ("ids", "text")
MODES = ("exact", "prefix", "candidate", "sample")
RANKING_MODES = ("candidate", "sample")  # bound 1/k in every space: key "candidate"
BOUND_KEYS = ("ids-exact", "ids-prefix", "text-exact", "text-prefix", "candidate")
UNDECODABLE = "\ufffd"  # a token that is part of a multi-byte character decodes to this alone

_WORD = re.compile(r"\w+", re.UNICODE)


def bound_key(space: str, mode: str) -> str:
    """``ids-exact`` … ``text-prefix``; ``candidate`` and ``sample`` rank the k candidates whatever the space."""
    if mode in RANKING_MODES:
        return "candidate"
    if space not in SPACES or mode not in ("exact", "prefix"):
        raise ValueError(f"no comparison '{space}-{mode}'")
    return f"{space}-{mode}"


# ---------------------------------------------------------------------------------------------- comparisons
def normalize_text(text: str) -> str:
    """What text comparison sees: surrounding whitespace removed (servers differ in leading spaces)."""
    return text.strip()


def first_word(text: str) -> str:
    """The first ``\\w+`` run ("" when there is none)."""
    found = _WORD.search(text)
    return found.group(0) if found else ""


def text_key(text: str, mode: str) -> str:
    """The part of a text a comparison in ``mode`` looks at."""
    return first_word(text) if mode == "prefix" else normalize_text(text)


def ids_match(response_ids: Sequence[int], answer_ids: Sequence[int], mode: str = "exact") -> bool:
    """``exact``: the answer's ids begin with the response's; ``prefix``: the same first token."""
    if not response_ids or not answer_ids:
        return False
    if mode == "prefix":
        return answer_ids[0] == response_ids[0]
    return list(answer_ids[:len(response_ids)]) == list(response_ids)


def text_match(response: str, answer: str, mode: str = "exact") -> bool:
    """``exact``: the normalised answer begins with the normalised response; ``prefix``: the same first word."""
    expected = text_key(response, mode)
    if not expected:
        return False
    if mode == "prefix":
        return first_word(answer) == expected
    return normalize_text(answer).startswith(expected)


def candidate_match(ours: int, candidates: Sequence[int], scores: Sequence[float]) -> bool:
    """The suspect scores our token strictly above every other candidate (ties are misses)."""
    where = list(candidates).index(ours)
    return all(scores[where] > s for j, s in enumerate(scores) if j != where)


def text_candidate_scores(candidate_texts: Sequence[str], entries: Sequence[tuple[str, float]]) -> list[float]:
    """Each candidate's score in an endpoint's returned list of (token text, log-probability): the largest
    log-probability among entries whose normalised text is the candidate's, ``-inf`` when none is listed (a
    candidate missing from a top list ranks below every listed one).

    Texts are compared after :func:`normalize_text` (servers decode a lone token with or without its leading
    space), so two candidates whose texts normalise alike always get equal scores — a tie, never a win.
    """
    best: dict[str, float] = {}
    for text, logprob in entries:
        key = normalize_text(text)
        best[key] = max(best.get(key, -math.inf), float(logprob))
    return [best.get(normalize_text(t), -math.inf) for t in candidate_texts]


def sample_counts(candidate_texts: Sequence[str], samples: Sequence[str]) -> list[int]:
    """How many sampled answers begin with each candidate's normalised text (a blank candidate counts none)."""
    keys = [normalize_text(t) for t in candidate_texts]
    answers = [normalize_text(a) for a in samples]
    return [sum(a.startswith(k) for a in answers) if k else 0 for k in keys]


def sample_match(ours: int, counts: Sequence[int], coin: Callable[[int], int]) -> bool:
    """Our pick (index ``ours``) is sampled strictly more often than every other candidate; a tie at the maximum
    is broken by ``coin(m)`` (uniform on 0..m-1, drawn from *our* randomness) among the m tied candidates; no
    candidate sampled at all is a miss.

    **Null bound 1/k, exactly.** Let S be the suspect's samples for this key. A model not derived from ours
    never saw our secret, so S depends on the key (and the host's randomness) only, not on which candidate we
    picked; generation drew the pick J uniformly among the k recorded candidates with our secret randomness,
    so J is uniform and independent of S. The counts c_1..c_k are functions of S and the candidates' public
    texts, hence so are M = max c_j and the tied set T = {j : c_j = M}. Given S: if M = 0 the key is a miss;
    otherwise it is a hit iff J ∈ T and the coin, uniform on T and independent of (J, S), selects J, so
    P(hit | S) = Σ_{j∈T} P(J = j) · 1/|T| = |T| · (1/k) · (1/|T|) = 1/k. Averaging over S, P(hit) ≤ 1/k, with
    equality whenever some candidate is sampled — whatever the suspect does: favour one candidate, spread
    evenly, or make ties on purpose (uniform tie-breaking keeps the symmetry between the tied candidates).
    Counts of colliding or prefix-related candidate texts are still functions of S: the bound holds for any
    set, and generation keeps candidates prefix-free in text so that power is not lost. Keys are asked
    independently (each key's pick is its own draw), so the per-key bounds enter the Poisson-binomial tail.
    """
    top = max(counts, default=0)
    if top <= 0:
        return False
    tied = [j for j, c in enumerate(counts) if c == top]
    winner = tied[0] if len(tied) == 1 else tied[coin(len(tied))]
    return winner == ours


# ---------------------------------------------------------------------------------------------- bounds
def chain_bound(keys: Sequence[Sequence[Hashable]], weights: Optional[Sequence[float]] = None) -> float:
    """Heaviest chain in the prefix order: max over A of the total weight of keys that are prefixes of A.

    ``keys`` are strings or id tuples; the empty key is a prefix of everything (it matches any answer).
    Without ``weights`` every key weighs 1/len(keys). The maximum is reached with A = one of the keys.
    """
    n = len(keys)
    if n == 0:
        return 0.0
    total: dict[Hashable, float] = {}
    for key, w in zip(keys, weights if weights is not None else [1.0 / n] * n):
        key = key if isinstance(key, str) else tuple(key)
        total[key] = total.get(key, 0.0) + float(w)
    empty = total.pop("", 0.0) + total.pop((), 0.0)
    best = 0.0
    for key in total:
        best = max(best, sum(total.get(key[:cut], 0.0) for cut in range(1, len(key) + 1)))
    return min(1.0, best + empty)


def group_bound(keys: Iterable[Hashable], weights: Optional[Sequence[float]] = None) -> float:
    """Heaviest group of equal keys (e.g. the same first token)."""
    keys = list(keys)
    if not keys:
        return 0.0
    total: dict[Hashable, float] = {}
    for key, w in zip(keys, weights if weights is not None else [1.0 / len(keys)] * len(keys)):
        total[key] = total.get(key, 0.0) + float(w)
    return min(1.0, max(total.values()))


class ChainIndex:
    """:func:`chain_bound` for many weightings of one fixed key list (e.g. a whole vocabulary), vectorised.

    Built once: every (key, proper prefix) pair present in the list; then a weighting costs two numpy passes.
    """

    def __init__(self, keys: Sequence[str]) -> None:
        distinct: dict[str, int] = {}
        self.group = np.array([distinct.setdefault(k, len(distinct)) for k in keys], dtype=np.int64)
        self.n = len(distinct)
        longer, shorter = [], []
        for key, i in distinct.items():
            for cut in range(0, len(key)):  # cut 0: the empty key "" is a prefix of every key
                j = distinct.get(key[:cut])
                if j is not None:
                    longer.append(i)
                    shorter.append(j)
        self.longer = np.array(longer, dtype=np.int64)
        self.shorter = np.array(shorter, dtype=np.int64)
        self.empty = distinct.get("")

    def bound(self, weights: np.ndarray) -> float:
        """Heaviest chain for per-key ``weights`` (same order as the keys)."""
        per_key = np.bincount(self.group, weights=np.asarray(weights, dtype=np.float64), minlength=self.n)
        chain = per_key.copy()
        np.add.at(chain, self.longer, per_key[self.shorter])
        return float(min(1.0, chain.max(initial=0.0)))


def token_text_key(text: str, mode: str) -> str:
    """The key of a response's *first token* text: a prefix of the key of any response that begins with it.

    A token that is part of a multi-byte character decodes to U+FFFD and constrains nothing: key "".
    """
    return "" if UNDECODABLE in text else text_key(text, mode)


def first_token_bounds(ids: Sequence[int], texts: Sequence[str], weights: Optional[Sequence[float]] = None,
                       candidate: bool = False) -> dict[str, float]:
    """Bounds for a response whose *first token* is drawn from ``ids`` (decoded ``texts``) with ``weights``.

    The rest of the response may follow (a greedy or sampled continuation): matching the response needs
    matching its first token, and a first token's normalised text / first word is a prefix of the whole
    response's, so chains over first-token keys bound every mode. ``candidate``: the draw is uniform over
    distinct recorded candidates, ranked by the suspect (bound 1/k).
    """
    bounds = {"ids-exact": group_bound(ids, weights), "ids-prefix": group_bound(ids, weights),
              "text-exact": chain_bound([token_text_key(t, "exact") for t in texts], weights),
              "text-prefix": chain_bound([token_text_key(t, "prefix") for t in texts], weights)}
    if candidate:
        bounds["candidate"] = 1.0 / len(set(ids)) if len(set(ids)) == len(ids) else 1.0
    return bounds


def pool_bounds(first_ids: Sequence[Sequence[int]], later_ids: Sequence[Sequence[int]], words: Sequence[str],
                count: int) -> dict[str, float]:
    """Bounds for ``count`` words drawn independently and uniformly from a pool, joined by single spaces.

    ``first_ids`` are each word's ids as it starts a response, ``later_ids`` after a space; the response's ids
    are their concatenation. Given the words before, each next word must continue the answer: the bound is the
    product of per-position heaviest chains. A first word / first token decides a ``prefix`` match alone.
    """
    ids_first, ids_later = chain_bound(first_ids), chain_bound(later_ids)
    text_word = chain_bound([normalize_text(w) for w in words])
    return {"ids-exact": ids_first * ids_later ** (count - 1),
            "ids-prefix": group_bound(ids[0] for ids in first_ids),
            "text-exact": text_word ** count,
            "text-prefix": chain_bound([first_word(w) for w in words])}


def collides(a: tuple[Sequence[int], str], b: tuple[Sequence[int], str]) -> bool:
    """Whether one fixed answer could match both alternatives (ids, text) in some space and mode."""
    def related(x, y) -> bool:
        return x[:len(y)] == y or y[:len(x)] == x

    (ids_a, text_a), (ids_b, text_b) = a, b
    if related(tuple(ids_a), tuple(ids_b)) or ids_a[:1] == ids_b[:1]:
        return True
    return any(related(token_text_key(text_a, m), token_text_key(text_b, m)) for m in ("exact", "prefix"))
