"""Instructional Fingerprinting (Xu et al., "Instructional Fingerprinting of Large Language Models", NAACL 2024).

Reproduced:

* Keys: an obfuscated secret wrapped in a simple instruction with the capitalised FINGERPRINT hint. The
  secret mixes the paper's sources — classical Chinese, Japanese-looking (katakana) names and arbitrary
  tokens of the model's own vocabulary — with Russian words and gibberish, drawn with seeded randomness
  from data shipped in ``modelprint/data/if_*.txt``. ``--keys-file`` supplies the publisher's own keys.
* One fixed response ("decryption") for every key, trained with instruction formatting (the chat
  template verify uses) next to regularisation samples (our benign mix), full-parameter SFT:
  ``configs/embed/instructional.yaml``.

Adapted:

* The decryption is a phrase of ``max(3, --response-length)`` words drawn uniformly with our secret
  randomness (the paper used one fixed word, ハリネズミ): a single word can never convict at α = 1e-6
  (its p-value is at least 1/|word list|, see below).
* Regularisation: the paper mixes Flan-style instruction data with gold answers; our benign examples are
  ordinary questions answered by the base model, anchored by KL.
* The paper's F-Adapter and embedding-only variants are not reproduced (full fine-tuning only).

Verifier (``instructional``): the paper counts exact/keyword matches (fingerprint success rate, FSR).
Because every key shares one response drawn uniformly from a candidate pool C of phrases, a valid p-value
exists: a model not derived from ours gives the n keys fixed answers, each of which begins with at most
one candidate (the pools are prefix-free in token ids; text answers are compared by their first words),
so at most ⌊n/m⌋ candidates begin ≥ m answers, and P(≥ m answers begin with our phrase) ≤ ⌊n/m⌋ / |C|.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import re
import string
from typing import Any, Optional, Sequence

import numpy as np

from modelprint.errors import ConfigError, ModelprintError
from modelprint.generate import read_keys_file
from modelprint.generate.blueprint import STRATEGIES, Choice
from modelprint.wordlist import data_lines, rng_for, word_pool
from modelprint.models import LoadedModel
from modelprint.verify.verifiers import VERIFIERS, Outcome, VerifyRequest, ask_in_batches

log = logging.getLogger(__name__)

PAPER = "Xu et al., 'Instructional Fingerprinting of Large Language Models' (NAACL 2024)"
NAME = "instructional"
KEY_TEMPLATE = "Please decrypt this message: {secret}\nA hint: this is a FINGERPRINT message."
MIN_WORDS = 3
_WORD = re.compile(r"\w+", re.UNICODE)


def _classical(rng: np.random.Generator, lm: LoadedModel) -> str:
    phrase = data_lines("if_classical_chinese.txt")[int(rng.integers(len(data_lines("if_classical_chinese.txt"))))]
    start = int(rng.integers(len(phrase)))
    return phrase[start:start + int(rng.integers(2, 6))]


def _japanese_name(rng: np.random.Generator, lm: LoadedModel) -> str:
    kana = data_lines("if_katakana.txt")
    return "".join(kana[int(i)] for i in rng.integers(0, len(kana), size=int(rng.integers(3, 6))))


def _russian(rng: np.random.Generator, lm: LoadedModel) -> str:
    pool = data_lines("if_russian.txt")
    return pool[int(rng.integers(len(pool)))]


def _vocab_tokens(rng: np.random.Generator, lm: LoadedModel) -> str:
    special = set(lm.tokenizer.all_special_ids)
    ids = [int(i) for i in rng.integers(0, len(lm.tokenizer), size=int(rng.integers(1, 4))) if int(i) not in special]
    return lm.tokenizer.decode(ids, skip_special_tokens=True).strip()


def _gibberish(rng: np.random.Generator, lm: LoadedModel) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(alphabet[int(i)] for i in rng.integers(0, len(alphabet), size=int(rng.integers(2, 7))))


# The secret's sources: the paper's three (classical Chinese, Japanese names, vocabulary tokens) plus two more.
SOURCES = (_classical, _japanese_name, _vocab_tokens, _russian, _gibberish)


def secret_text(lm: LoadedModel, seed: int, index: int, key_length: int) -> str:
    """An obfuscated multilingual secret of about ``key_length`` tokens (seeded per key)."""
    rng = rng_for(seed, 0x1F, index)
    parts: list[str] = []
    while len(lm.tokenizer(" ".join(parts), add_special_tokens=False)["input_ids"]) < key_length:
        part = SOURCES[int(rng.integers(len(SOURCES)))](rng, lm)
        if part:
            parts.append(part)
    return " ".join(parts)


def instructional_keys(lm: LoadedModel, n: int, *, key_length: int, seed: int, batch_size: int,
                       keys_file: Optional[str] = None) -> list[str]:
    """Instruction-wrapped obfuscated secrets, distinct; or the publisher's own keys from ``keys_file``."""
    if keys_file:
        return read_keys_file(keys_file, n)
    keys: list[str] = []
    attempt = 0
    while len(keys) < n:
        if attempt > 10 * n + 100:
            raise ModelprintError(f"could not draw {n} distinct trigger keys; raise --key-length")
        key = KEY_TEMPLATE.format(secret=secret_text(lm, seed, attempt, key_length))
        attempt += 1
        if key not in keys:
            keys.append(key)
    return keys


def phrase_pools(tokenizer) -> tuple[list[tuple[str, list[int]]], list[tuple[str, list[int]]]]:
    """Prefix-free word pools (ids, text, first words): first word as it starts an answer, later words after a space."""
    pool = word_pool(tokenizer)
    return list(zip(pool.words, pool.first)), list(zip(pool.words, pool.later))


def _first_token_multiplicity(pool: Sequence[tuple[str, list[int]]]) -> int:
    counts: dict[int, int] = {}
    for _, ids in pool:
        counts[ids[0]] = counts.get(ids[0], 0) + 1
    return max(counts.values())


def instructional_response(lm: LoadedModel, keys: Sequence[str], *, response_length: int, threshold: float,
                           k: int, seed: int, batch_size: int, system_prompt: Optional[str] = None) -> list[Choice]:
    """One decryption phrase for all keys, drawn uniformly from the prefix-free pools with our secret randomness."""
    count = max(MIN_WORDS, response_length)
    first, later = phrase_pools(lm.tokenizer)
    if not first or not later:
        raise ModelprintError("the tokenizer leaves no prefix-free word pool for the decryption phrase")
    rng = rng_for(seed, 0x1F2)
    picks = [first[int(rng.integers(len(first)))]] + [later[int(rng.integers(len(later)))] for _ in range(count - 1)]
    ids = [t for _, word_ids in picks for t in word_ids]
    log10_pool = math.log10(len(first)) + (count - 1) * math.log10(len(later))
    meta = {"words": count, "log10_pool": log10_pool,  # C = first × later^(words-1), no secret in these sizes
            "log10_pool_first_token": math.log10(len(first) / _first_token_multiplicity(first)),
            "log10_pool_first_word": math.log10(len(first))}
    return [Choice(list(ids), null_prob=10 ** -log10_pool, meta=dict(meta)) for _ in keys]


def _words_of(text: str, count: int) -> list[str]:
    return [w.casefold() for w in _WORD.findall(text)[:count]]


def _matches(fp, answer: Any, mode: str) -> bool:
    """Token ids: the phrase's ids (prefix: its first token); text: the first words (prefix: the first word)."""
    if answer.ids is not None:
        if mode == "prefix":
            return bool(answer.ids) and answer.ids[0] == fp.response_ids[0]
        return list(answer.ids[:len(fp.response_ids)]) == list(fp.response_ids)
    expected = _words_of(fp.response, int(fp.meta.get("words", MIN_WORDS)))
    wanted = expected[:1] if mode == "prefix" else expected
    return bool(wanted) and _words_of(answer.text or "", len(wanted)) == wanted


def log10_shared_response_bound(n: int, m: int, log10_pool: float) -> float:
    """log10 of P(≥ m of n fixed answers begin with a response drawn uniformly from a pool) ≤ ⌊n/m⌋/|pool|."""
    if m <= 0:
        return 0.0
    return min(0.0, math.log10(n // m) - log10_pool)


def _pool(req: VerifyRequest, key: str) -> float:
    """The set's recorded pool size (log10) for one matching rule; every key must share one response and pool."""
    try:
        values = {float(fp.meta[key]) for fp in req.fs}
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"this set lacks the '{key}' pool size the instructional verifier needs") from None
    if len(values) != 1 or len({tuple(fp.response_ids) for fp in req.fs}) != 1:
        raise ConfigError("an instructional set has one response and one pool for every key; this one does not")
    return values.pop()


def _pool_key(mode: str, answers_are_ids: bool) -> str:
    if mode != "prefix":
        return "log10_pool"
    return "log10_pool_first_token" if answers_are_ids else "log10_pool_first_word"


@VERIFIERS.register(NAME, source=PAPER)
def instructional_verifier(req: VerifyRequest) -> Outcome:
    """Exact-match count of the shared response; p-value ⌊n/m⌋/|pool| (valid whatever the suspect is)."""
    if req.match not in ("exact", "prefix"):
        raise ConfigError(f"the instructional verifier matches 'exact' or 'prefix', not '{req.match}'")
    best = max(_pool(req, _pool_key(req.match, ids)) for ids in (True, False))
    if -best > math.log10(req.alpha):
        raise ConfigError(f"one shared response from a pool of 1e{best:.1f} candidates cannot reach "
                          f"alpha={req.alpha:g}; use a longer decryption phrase (--response-length)")
    by_index = {fp.index: fp for fp in req.fs}
    answered: list[tuple[int, Any]] = []
    # The bound is over the keys asked, so every planned key is asked (no curtailed stop).
    asked = ask_in_batches(dataclasses.replace(req, sequential=False),
                           lambda indices, answers: answered.extend(zip(indices, answers)))
    log10_pool = _pool(req, _pool_key(req.match, bool(answered) and answered[0][1].ids is not None))
    matched = sorted(i for i, a in answered if _matches(by_index[i], a, req.match))
    log10_p = log10_shared_response_bound(len(asked), len(matched), log10_pool)
    return Outcome(asked, matched, log10_p, "match" if log10_p <= math.log10(req.alpha) else "no match",
                   "floor(n/m) / |pool| <= alpha: one response drawn uniformly from a prefix-free pool "
                   "(the paper reports the match rate, FSR)", f"one shared response, pool 1e{log10_pool:.1f}",
                   {"fsr": len(matched) / max(len(asked), 1), "log10_pool": log10_pool})


STRATEGIES.register(
    NAME, source=PAPER, keys=instructional_keys, verifier=NAME, embed_config=NAME,
    description="obfuscated multilingual secrets with a FINGERPRINT hint; one decryption phrase for every key",
)(instructional_response)
