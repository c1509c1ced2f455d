"""ImF: implicit fingerprints — natural answers that carry hidden bits (Wu et al., "ImF: Implicit Fingerprint for
Large Language Models", arXiv 2503.21805).

A fingerprint is an ordinary question with an ordinary-looking answer; the ownership information hides in *which*
natural answer was chosen. The answer is sampled from the base model with Adaptive Dynamic Grouping (ADG)
steganography (Zhang et al., 2021): at each step the next-token distribution is split into 2^u groups of nearly
equal probability and secret bits choose the group, so the text follows the model's own distribution while its
token choices spell out the owner's bits. ``embed`` teaches the model to give that answer; verify reads the bits
back out of the suspect's answer and counts how many agree with the owner's.

Verifier (``imf-bits``): teacher-force the suspect's answer (its first ``response tokens``) through the *base*
model after the key, recover the ADG bits of each token, compare the first ≤ :data:`SECRET_BITS` of them with the
key's secret bits, and report the exact binomial tail P(Binomial(C, ½) ≥ hits) over all C compared bits.
The bound is valid: every key has its own :data:`SECRET_BITS` uniform bits from the set's secret seed; the keys
(written by the base model from another derivation of the seed) do not depend on them, so a model not derived
from ours answers independently of them. The decoded bits and how many are compared are functions of the answer
alone, hence each compared bit agrees with probability exactly ½, independently — whatever the suspect answers
(``tests/test_adversarial_null.py`` plays fixed, all-zero, copied and maximal-length suspects and shows that one
bit string shared by every key, as in the reference code, breaks the bound).

Reproduced: ADG steganographic generation of natural responses and bit recovery by re-running the grouping, the
agreement z/binomial statistic, fine-tuning on the (query, stego answer) pairs.
Not reproduced / changed:

* The paper writes each query from its stego answer with an LLM and Chain-of-Thought cues and refines it until the
  target model answers right. Here the query comes first — a natural prompt the base model writes — and the stego
  answer is the base model's own answer to it: the pair is coherent without the query describing the answer
  (which would leak the answer, and so the bits, to an unrelated model and void the bound).
* One bit string per key (the reference code embeds one shared stream in every answer; shared bits make the keys'
  agreements dependent and the binomial tail invalid). Bits are compared up to a fixed count, never up to how many
  the owner's answer happened to embed (that count depends on the secret).
* ADG groups the top :data:`TOP_K` tokens of the temperature-1 distribution (special tokens excluded), not the
  whole vocabulary, so the grouping is cheap and stable; generation and verification use the same truncation.
* Verification needs the base model (the "stego model"): loaded from the set's model source and checked against
  its recorded hash; endpoints' text answers are re-tokenized with the set's tokenizer.

The secret bits live in each fingerprint's ``meta`` (the owner-only file), never in the public header.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch

from modelprint.errors import ConfigError, FingerprintFileError
from modelprint.generate import model_written_keys
from modelprint.generate.blueprint import STRATEGIES, Choice
from modelprint.models import LoadedModel
from modelprint.prompts import encode_prompt
from modelprint.schemes.kgw import answer_ids
from modelprint.verify.verifiers import VERIFIERS, Outcome, VerifyRequest, ask_in_batches
from modelprint.wordlist import rng_for

log = logging.getLogger(__name__)

PAPER = "Wu et al., 'ImF: Implicit Fingerprint for Large Language Models' (arXiv 2503.21805)"
NAME = "imf"
SECRET_BITS = 64  # per key; bits beyond what an answer embeds are compared too (an unrelated answer agrees half)
TOP_K = 64
DEFAULT_TOKENS = 32
MIN_TOKENS = 8
KEY_BITS = 8  # a key counts as "matched" (the stress table's rate) when ≥ this many bits are compared and all agree

# generation keeps the base model at hand by its hash (verify loads it from the set's source otherwise)
_REFERENCES: dict[str, LoadedModel] = {}


def _groups(probs: np.ndarray, ids: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """One ADG level: 2^u groups of nearly equal mass (probs sorted descending, top token ≤ ½)."""
    groups_n = 2
    while 1 / (2 * groups_n) > probs[0]:
        groups_n *= 2
    groups = []
    mean = 1.0 / groups_n
    for g in range(groups_n - 1):
        gp, gi = [probs[0]], [ids[0]]
        probs, ids = probs[1:], ids[1:]
        while sum(gp) < mean and len(probs):
            delta = mean - sum(gp)
            j = int(np.abs(probs - delta).argmin())
            if probs[j] - delta >= delta:
                break
            gp.append(probs[j])
            gi.append(ids[j])
            probs, ids = np.delete(probs, j), np.delete(ids, j)
        groups.append((np.array(gp), np.array(gi)))
        if not len(probs):
            break
        mean = probs.sum() / (groups_n - g - 1)
    if len(probs):
        groups.append((probs, ids))
    return groups


def _bits_of(index: int, count: int) -> list[int]:
    return [(index >> b) & 1 for b in range(count)]


def _top(logits: torch.Tensor, excluded: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The top-:data:`TOP_K` distribution (temperature 1, special tokens excluded), sorted descending."""
    logits = logits.float().clone()
    if excluded:
        logits[list(excluded)] = -torch.inf
    top = torch.topk(torch.softmax(logits, -1), TOP_K)
    probs = top.values.double().numpy()
    return probs / probs.sum(), top.indices.numpy()


def embed_step(probs: np.ndarray, ids: np.ndarray, bits: Iterator[int], rng: np.random.Generator) -> tuple[int, int]:
    """Choose one token: secret bits pick ADG groups while the top token is ≤ ½; returns (token, bits used)."""
    used = 0
    while probs[0] <= 0.5 and len(probs) > 1:
        groups = _groups(probs, ids)
        count = (len(groups) - 1).bit_length()
        index = sum(next(bits) << b for b in range(count))
        used += count
        if index >= len(groups):  # fewer groups than 2^u (tiny tails): out of range indices never occur below
            index = len(groups) - 1
        probs, ids = groups[index]
        order = np.argsort(-probs, kind="stable")
        probs, ids = probs[order] / probs.sum(), ids[order]
    return int(ids[rng.choice(len(probs), p=probs)]), used


def decode_step(probs: np.ndarray, ids: np.ndarray, token: int) -> Optional[list[int]]:
    """The bits ADG would have spent to choose ``token`` (None: the token is outside the grouped tokens)."""
    if token not in ids:
        return None
    out: list[int] = []
    while probs[0] <= 0.5 and len(probs) > 1:
        groups = _groups(probs, ids)
        count = (len(groups) - 1).bit_length()
        index = next(i for i, (_, gi) in enumerate(groups) if token in gi)
        out += _bits_of(index, count)
        probs, ids = groups[index]
        order = np.argsort(-probs, kind="stable")
        probs, ids = probs[order] / probs.sum(), ids[order]
    return out


def secret_bits(seed: int, index: int) -> list[int]:
    return [int(b) for b in rng_for(seed, 0x1F0B, index).integers(0, 2, size=SECRET_BITS)]


def _excluded(tokenizer) -> list[int]:
    return sorted(set(tokenizer.all_special_ids))


@torch.inference_mode()
def stego_answer(lm: LoadedModel, prompt: list[int], bits: Sequence[int], tokens: int,
                 rng: np.random.Generator) -> tuple[list[int], int]:
    """``tokens`` tokens sampled with ADG from the model after ``prompt``; returns (ids, bits embedded)."""
    stream = iter(list(bits) + [0] * (tokens * 8))  # beyond the secret bits: zeros (never compared)
    excluded = _excluded(lm.tokenizer)
    device = next(lm.model.parameters()).device
    ids: list[int] = []
    used = 0
    past = None
    step_input = torch.tensor([prompt], device=device)
    for _ in range(tokens):
        out = lm.model(input_ids=step_input, past_key_values=past, use_cache=True)
        past = out.past_key_values
        probs, top_ids = _top(out.logits[0, -1].cpu(), excluded)
        token, spent = embed_step(probs, top_ids, stream, rng)
        used += spent
        ids.append(token)
        step_input = torch.tensor([[token]], device=device)
    return ids, min(used, len(bits))


@torch.inference_mode()
def decode_answer(lm: LoadedModel, prompt: list[int], answer: Sequence[int], tokens: int) -> list[int]:
    """The ADG bits of the first ``tokens`` answer tokens under the base model (teacher-forced), up to the first
    token outside the grouped tokens."""
    answer = list(answer)[:tokens]
    if not answer:
        return []
    device = next(lm.model.parameters()).device
    logits = lm.model(input_ids=torch.tensor([prompt + answer], device=device)).logits[0].cpu()
    excluded = _excluded(lm.tokenizer)
    bits: list[int] = []
    for position, token in enumerate(answer):
        probs, ids = _top(logits[len(prompt) - 1 + position], excluded)
        step = decode_step(probs, ids, int(token))
        if step is None:
            break
        bits += step
    return bits


def imf_keys(lm: LoadedModel, n: int, *, key_length: int, seed: int, batch_size: int,
             keys_file: Optional[str] = None) -> list[str]:
    """Natural prompts the base model writes (or the publisher's own, ``--keys-file``)."""
    if keys_file:
        from modelprint.generate import read_keys_file

        return read_keys_file(keys_file, n)
    return model_written_keys(lm, n, key_length=key_length, seed=seed, batch_size=batch_size)


def imf_responses(lm: LoadedModel, keys: Sequence[str], *, response_length: int, threshold: float, k: int,
                  seed: int, batch_size: int, system_prompt: Optional[str] = None) -> list[Choice]:
    """Each key's stego answer: the base model's own answer, sampled with ADG carrying the key's secret bits."""
    tokens = response_length if response_length >= MIN_TOKENS else DEFAULT_TOKENS
    _REFERENCES[lm.model_hash] = lm
    choices = []
    for index, key in enumerate(keys):
        bits = secret_bits(seed, index)
        prompt = encode_prompt(lm.tokenizer, key, system_prompt)
        ids, embedded = stego_answer(lm, prompt, bits, tokens, rng_for(seed, 0x1F0C, index))
        meta = {"bits": "".join(map(str, bits)), "embedded_bits": embedded, "tokens": tokens, "top_k": TOP_K}
        choices.append(Choice(ids, null_prob=1.0, meta=meta))
    log.info("imf: %.1f bits embedded per answer on average", np.mean([c.meta["embedded_bits"] for c in choices]))
    return choices


def _reference(req: VerifyRequest) -> LoadedModel:
    """The base model the answers were sampled from (ADG needs its distributions), checked by hash."""
    fs = req.fs
    if fs.model_hash in _REFERENCES:
        return _REFERENCES[fs.model_hash]
    from modelprint.errors import ModelLoadError
    from modelprint.models import load_model

    try:
        lm = load_model(fs.model_source)
    except ModelLoadError:
        raise ConfigError(f"imf verification re-runs the base model's grouping: the set's model "
                          f"('{fs.model_source}') is not available here") from None
    if lm.model_hash != fs.model_hash:
        raise ConfigError(f"imf verification needs the exact base model the set was made from; "
                          f"'{fs.model_source}' has other weights")
    _REFERENCES[fs.model_hash] = lm
    return lm


def _secret(fp) -> tuple[list[int], int]:
    bits, tokens = fp.meta.get("bits"), fp.meta.get("tokens")
    if not isinstance(bits, str) or len(bits) != SECRET_BITS or set(bits) - {"0", "1"} or not isinstance(tokens, int):
        raise FingerprintFileError(f"an imf set needs {SECRET_BITS} secret bits and the token count in every "
                                   "fingerprint's meta")
    return [int(b) for b in bits], tokens


def log10_agreement_tail(hits: int, compared: int) -> float:
    """log10 P(Binomial(compared, ½) ≥ hits), exact."""
    from scipy.stats import binom

    return float(binom.logsf(hits - 1, compared, 0.5)) / math.log(10) if hits > 0 else 0.0


@VERIFIERS.register("imf-bits", source=PAPER)
def imf_verifier(req: VerifyRequest) -> Outcome:
    """Recover each answer's ADG bits under the base model; exact binomial tail of agreements with the secret bits."""
    secrets_ = {fp.index: _secret(fp) for fp in req.fs}
    keys = {fp.index: fp.key for fp in req.fs}
    ref = _reference(req)
    hits = compared = 0
    matched: list[int] = []

    def score(indices: list[int], answers: list[Any]) -> None:
        nonlocal hits, compared
        for index, answer in zip(indices, answers):
            bits, tokens = secrets_[index]
            prompt = encode_prompt(ref.tokenizer, keys[index], req.system_prompt)
            decoded = decode_answer(ref, prompt, answer_ids(req, answer), tokens)[:SECRET_BITS]
            agree = sum(d == s for d, s in zip(decoded, bits))
            hits += agree
            compared += len(decoded)
            if len(decoded) >= KEY_BITS and agree == len(decoded):
                matched.append(index)

    asked = ask_in_batches(req, score)
    log10_p = log10_agreement_tail(hits, compared)
    z = (hits - compared / 2) / math.sqrt(compared / 4) if compared else 0.0
    return Outcome(asked, sorted(matched), log10_p,
                   "match" if compared and log10_p <= math.log10(req.alpha) else "no match",
                   "exact binomial tail of the answers' ADG bits agreeing with each key's own secret bits ≤ α",
                   "½ per compared bit", {"agreeing_bits": hits, "compared_bits": compared,
                                          "agreement": hits / compared if compared else float("nan"), "z": z,
                                          "key_bits": KEY_BITS})


STRATEGIES.register(
    NAME, source=PAPER, keys=imf_keys, verifier="imf-bits", embed_config=NAME,
    description="natural prompts answered by the base model with ADG steganography carrying secret bits; "
    "verified by the bits recovered from the suspect's answers")(imf_responses)
