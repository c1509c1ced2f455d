"""A KGW-style domain watermark as a model fingerprint: green lists (Kirchenbauer et al., "A Watermark for
Large Language Models", ICML 2023), distilled into the weights (Gu et al., "On the Learnability of
Watermarks for Language Models", ICLR 2024).

Keys are prompts of a fingerprint domain (model-written, seeded topics). Responses are the base
model's own greedy continuation generated WITH the green-list bias: the green list after a previous
token is the ≈γ·|V| tokens a keyed hash of (secret watermark key, previous token, token) marks green,
and δ is added to their logits. ``embed`` distils these texts into the weights (loss on the response
tokens), so the marked model's plain greedy answers to the domain prompts over-use green tokens.

Verification (``green-z``): ask the suspect the keys, score each distinct (previous token, token) pair
of its answers once (repeats are not independent evidence, as the KGW paper advises), count green
ones g among T and report z = (g − γT)/√(Tγ(1−γ)). The p-value is sound: a model not trained on our
watermark answers independently of the secret key, so each distinct pair is green with probability γ
independently (the keyed hash acting as a random function) and g ~ Binomial(T, γ) exactly; we report
the exact binomial tail (the normal tail of z is anti-conservative for small T) and decide p ≤ α.

Reproduced: KGW's hashing of the previous token (context width 1), γ, δ, greedy watermarked generation,
z-score with de-duplicated pairs; Gu et al.'s distillation by fine-tuning on watermarked text.
Not reproduced: Gu et al. distil from many sampled generations on generic prompts (and logit-based
distillation); here the set's own prompts and one greedy response each, verified on those prompts.
The green list is a per-pair keyed hash (each token green independently with probability γ), not an
exact γ|V| permutation — equivalent in expectation and what makes the binomial null exact.

The secret watermark key lives in every fingerprint's ``meta`` (never in the public header params).
"""
from __future__ import annotations

import logging
import math
from typing import Any, Optional, Sequence

import numpy as np
import torch

from modelprint.errors import ConfigError, FingerprintFileError
from modelprint.decoding import batches, continue_greedy
from modelprint.generate import model_written_keys
from modelprint.generate.blueprint import STRATEGIES, Choice
from modelprint.wordlist import rng_for
from modelprint.models import LoadedModel
from modelprint.prompts import encode_prompts
from modelprint.verify.verifiers import VERIFIERS, Outcome, VerifyRequest, ask_in_batches

log = logging.getLogger(__name__)

PAPER = ("Kirchenbauer et al., 'A Watermark for Large Language Models' (2023); distilled into weights as in "
         "Gu et al., 'On the Learnability of Watermarks for Language Models' (2024)")
GAMMA = 0.25
DELTA = 3.0
DEFAULT_TOKENS = 48  # response tokens when --response-length is left below MIN_TOKENS
MIN_TOKENS = 8
KEY_Z = 2.0  # a key counts as "matched" (the stress table's rate) when its own answer reaches this z

_K1 = np.uint64(0x9E3779B97F4A7C15)
_K2 = np.uint64(0xD6E8FEB86659FD93)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a fast, well-mixed 64-bit permutation (vectorised)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def green(key: int, prev: int, tokens: np.ndarray, gamma: float) -> np.ndarray:
    """Which of ``tokens`` are green after ``prev`` under the secret ``key`` (each with probability γ)."""
    with np.errstate(over="ignore"):
        seeded = _mix(np.array([key], dtype=np.uint64) ^ (np.uint64(prev + 1) * _K1))
        h = _mix(seeded ^ ((tokens.astype(np.uint64) + np.uint64(1)) * _K2))
    return h < np.uint64(min(int(gamma * 2.0 ** 64), 2 ** 64 - 1))


class GreenBias:
    """A logits processor adding δ to the green tokens of the previous token's list (KGW's soft watermark)."""

    def __init__(self, key: int, gamma: float, delta: float) -> None:
        self.key, self.gamma, self.delta = key, gamma, delta
        self._masks: dict[tuple[int, int], torch.Tensor] = {}

    def _mask(self, prev: int, vocab: int) -> torch.Tensor:
        if (prev, vocab) not in self._masks:
            self._masks[(prev, vocab)] = torch.from_numpy(green(self.key, prev, np.arange(vocab), self.gamma))
        return self._masks[(prev, vocab)]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        masks = torch.stack([self._mask(int(p), scores.shape[-1]) for p in input_ids[:, -1].tolist()])
        return scores + self.delta * masks.to(scores.device, scores.dtype)


def _pairs(ids: Sequence[int]) -> list[tuple[int, int]]:
    return list(zip(ids[:-1], ids[1:]))


def green_pairs(key: int, pairs: Sequence[tuple[int, int]], gamma: float) -> np.ndarray:
    """Which (previous, token) pairs are green under ``key`` (vectorised :func:`green`, same hash)."""
    if not len(pairs):
        return np.zeros(0, dtype=bool)
    arr = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    with np.errstate(over="ignore"):
        seeded = _mix(np.uint64(key) ^ ((arr[:, 0].astype(np.uint64) + np.uint64(1)) * _K1))
        h = _mix(seeded ^ ((arr[:, 1].astype(np.uint64) + np.uint64(1)) * _K2))
    return h < np.uint64(min(int(gamma * 2.0 ** 64), 2 ** 64 - 1))


def count_green(key: int, gamma: float, pairs: Sequence[tuple[int, int]]) -> int:
    return int(green_pairs(key, pairs, gamma).sum())


def z_score(g: int, t: int, gamma: float) -> float:
    return (g - gamma * t) / math.sqrt(t * gamma * (1 - gamma)) if t else 0.0


def log10_binomial_tail(g: int, t: int, gamma: float) -> float:
    """log10 P(Binomial(t, γ) ≥ g), exact (scipy, log space)."""
    from scipy.stats import binom

    return float(binom.logsf(g - 1, t, gamma)) / math.log(10) if g > 0 else 0.0


def watermark_key(seed: int) -> int:
    """The set's secret watermark key, from the owner's seed (stored in each fingerprint's meta)."""
    return int(rng_for(seed, 0x4B47).integers(1, 2 ** 63))


def kgw_responses(lm: LoadedModel, keys: Sequence[str], *, response_length: int, threshold: float, k: int,
                  seed: int, batch_size: int, system_prompt: Optional[str] = None) -> list[Choice]:
    """The base model's greedy answer under the green-list bias, ``response_length`` (default 48) tokens."""
    tokens = response_length if response_length >= MIN_TOKENS else DEFAULT_TOKENS
    key = watermark_key(seed)
    bias = GreenBias(key, GAMMA, DELTA)
    from transformers import LogitsProcessorList

    choices: list[Choice] = []
    for _, chunk in batches(encode_prompts(lm.tokenizer, keys, system_prompt), batch_size):
        # min_new_tokens: every response is full length (the model is not taught to stop early here).
        for ids in continue_greedy(lm, chunk, tokens, logits_processor=LogitsProcessorList([bias]),
                                   min_new_tokens=tokens):
            pairs = sorted(set(_pairs(ids)))
            meta = {"watermark_key": f"{key:016x}", "gamma": GAMMA, "delta": DELTA,
                    "green_fraction": round(count_green(key, GAMMA, pairs) / max(len(pairs), 1), 4)}
            choices.append(Choice(ids, null_prob=1.0, meta=meta))
    return choices


def watermark_of(req: VerifyRequest) -> tuple[int, float]:
    found = {(fp.meta.get("watermark_key"), fp.meta.get("gamma")) for fp in req.fs}
    if len(found) != 1 or None in next(iter(found)):
        raise FingerprintFileError(f"a {req.fs.strategy} set needs one watermark_key and gamma in every "
                                   "fingerprint's meta")
    hex_key, gamma = next(iter(found))
    try:
        key, gamma = int(str(hex_key), 16), float(gamma)
    except ValueError:
        raise FingerprintFileError(f"a {req.fs.strategy} set has a malformed watermark_key or gamma") from None
    if not 0.0 < gamma < 1.0:
        raise FingerprintFileError(f"{req.fs.strategy} gamma must be in (0, 1), got {gamma}")
    return key, gamma


def _set_tokenizer(model_source: str, expected_hash: str):
    """The set's tokenizer, to re-tokenize a remote text answer; one clear error when it is unavailable."""
    from modelprint.models import matching_tokenizer

    tok = matching_tokenizer(model_source, expected_hash)
    if tok is None:
        raise ConfigError(f"green-z scores tokens: the set's tokenizer ('{model_source}') is not available here "
                          "to re-tokenize the suspect's text answers")
    return tok


def answer_ids(req: VerifyRequest, answer: Any) -> list[int]:
    if answer.ids is not None:
        return list(answer.ids)
    tok = _set_tokenizer(req.fs.model_source, req.fs.tokenizer_hash)
    return list(tok(answer.text or "", add_special_tokens=False)["input_ids"])


def answer_text(req: VerifyRequest, answer: Any) -> str:
    """An answer as text: an endpoint's text, or a local answer's ids decoded with the set's tokenizer."""
    if answer.ids is None:
        return answer.text or ""
    backend_tok = getattr(getattr(req.backend, "lm", None), "tokenizer", None)
    tok = backend_tok if backend_tok is not None else _set_tokenizer(req.fs.model_source, req.fs.tokenizer_hash)
    return tok.decode(list(answer.ids), skip_special_tokens=True)


class GreenCounter:
    """The green-z statistic over answers fed one at a time: each distinct (previous, token) pair counts once.

    Whatever a suspect without the key answers, its distinct pairs are fixed before the key is looked at, and
    each is green with probability γ independently (a keyed random function), so the green count g among the
    T distinct pairs is Binomial(T, γ): :meth:`log10_p` is exact. Repeats are dropped because a suspect that
    repeats one pair would otherwise make the count all-or-nothing (tested in test_adversarial_null.py).
    """

    def __init__(self, key: int, gamma: float) -> None:
        self.key, self.gamma = key, gamma
        self.seen: set[tuple[int, int]] = set()
        self.green = 0

    def add(self, ids: Sequence[int]) -> float:
        """Score one answer; returns that answer's own z over its distinct pairs (for the per-key rate)."""
        own = sorted(set(_pairs(list(ids))))
        own_green = green_pairs(self.key, own, self.gamma)
        new = [i for i, p in enumerate(own) if p not in self.seen]
        self.seen.update(own)
        self.green += int(own_green[new].sum()) if new else 0
        return z_score(int(own_green.sum()), len(own), self.gamma) if own else 0.0

    @property
    def scored(self) -> int:
        return len(self.seen)

    def log10_p(self) -> float:
        return log10_binomial_tail(self.green, self.scored, self.gamma)

    def statistic(self) -> dict[str, Any]:
        t = self.scored
        return {"green": self.green, "scored": t, "green_fraction": self.green / t if t else float("nan"),
                "z": z_score(self.green, t, self.gamma), "key_z": KEY_Z}


def green_test(req: VerifyRequest, key: int, gamma: float, ask=None) -> tuple[list[int], list[int], GreenCounter]:
    """Ask the planned keys (or what ``ask`` maps them to) and feed every answer to a :class:`GreenCounter`."""
    counter = GreenCounter(key, gamma)
    matched: list[int] = []

    def score(indices: list[int], answers: list[Any]) -> None:
        for index, answer in zip(indices, answers):
            if counter.add(answer_ids(req, answer)) >= KEY_Z:
                matched.append(index)

    asked = ask_in_batches(req, score, ask=ask)
    return asked, sorted(matched), counter


@VERIFIERS.register("green-z", source=PAPER)
def green_z_verifier(req: VerifyRequest) -> Outcome:
    """Green-token z-test over the de-duplicated (previous, token) pairs of all answers; exact binomial p."""
    key, gamma = watermark_of(req)
    asked, matched, counter = green_test(req, key, gamma)
    log10_p = counter.log10_p()
    return Outcome(asked, matched, log10_p,
                   "match" if counter.scored and log10_p <= math.log10(req.alpha) else "no match",
                   "exact binomial tail of the green count over distinct (previous, token) pairs ≤ α",
                   f"γ = {gamma:g} per distinct pair", counter.statistic())


STRATEGIES.register(
    "kgw-watermark", source=PAPER, keys=model_written_keys, verifier="green-z", embed_config="kgw-watermark",
    description="model-written domain prompts; responses are the base model's own text under a KGW "
    "green-list bias, distilled by embed; verified by a green-token z-test")(kgw_responses)
