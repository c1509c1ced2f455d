"""Response choosers: Perinucleus, inverse nucleus, random words, model-written text.

Each returns one :class:`Choice` per key, with ``null_prob`` — an upper bound on
the chance that a model *not derived from the fingerprinted one* answers the key
with this response under greedy decoding. The bound comes from our own secret
randomness, so it holds whatever the suspect model is:

* Perinucleus picks uniformly among k candidates, so any fixed answer matches
  with probability ≤ 1/k — and so does "the suspect ranks our pick above the other
  candidates" (``verify --match candidate``), which is why the candidates are recorded.
* Inverse nucleus samples from a distribution whose largest mass is recorded.
* Random words: 1 / |word list| per word.
* Model-written responses are sampled; the top probability at the first step bounds a match.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from tqdm.auto import tqdm

from modelprint.errors import ConfigError, ModelprintError
from modelprint.generate.decoding import batches, continue_greedy, continue_sampled, next_token_probs, word_token_mask
from modelprint.generate.registry import Choice
from modelprint.generate.wordlist import random_words, rng_for, words
from modelprint.models import LoadedModel
from modelprint.prompts import encode_prompts, response_ids


def nucleus_size(sorted_probs: torch.Tensor, threshold: float) -> int:
    """Smallest number of top tokens whose probability mass reaches ``threshold``."""
    cumulative = torch.cumsum(sorted_probs.double(), dim=0)
    return int(torch.searchsorted(cumulative, torch.tensor([threshold], dtype=torch.float64)).item()) + 1


def perinucleus_candidates(probs: torch.Tensor, threshold: float, k: int,
                           valid: torch.Tensor) -> tuple[list[int], list[int], int, int]:
    """The k valid tokens ranked just below the nucleus.

    Returns (token ids, their 0-based ranks, nucleus size, how many invalid tokens were skipped).
    """
    order = torch.argsort(probs, descending=True, stable=True)
    sorted_probs = probs[order]
    size = nucleus_size(sorted_probs, threshold)
    tail = order[size:]
    ok = valid[tail].nonzero().flatten()[:k]
    if len(ok) < k:
        raise ModelprintError("fewer than k word tokens lie below the nucleus; lower --nucleus-threshold or --nucleus-k")
    ranks = (ok + size).tolist()
    widened = int(ok[-1].item()) + 1 - k
    return order[ranks].tolist(), ranks, size, widened


def _check(threshold: float, k: int) -> None:
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"nucleus threshold must be in (0, 1), got {threshold}")
    if k < 1:
        raise ConfigError(f"nucleus k must be ≥ 1, got {k}")


def _with_continuation(lm: LoadedModel, prompts: list[list[int]], firsts: list[int],
                       response_length: int) -> list[list[int]]:
    """First token chosen by the strategy, the rest the model's own greedy continuation."""
    rest = continue_greedy(lm, [p + [f] for p, f in zip(prompts, firsts)], response_length - 1)
    return [[f] + r for f, r in zip(firsts, rest)]


def perinucleus(lm: LoadedModel, keys: Sequence[str], *, response_length: int, threshold: float, k: int,
                seed: int, batch_size: int, system_prompt: Optional[str] = None) -> list[Choice]:
    """Perinucleus sampling (Nasery et al., "Scalable Fingerprinting of Large Language Models", 2025)."""
    _check(threshold, k)
    valid = word_token_mask(lm.tokenizer)
    choices: list[Choice] = []
    prompts_all = encode_prompts(lm.tokenizer, keys, system_prompt)
    for start, prompts in tqdm(list(batches(prompts_all, batch_size)), desc="choosing responses", leave=False):
        probs = next_token_probs(lm, prompts)
        firsts, metas = [], []
        for row, p in enumerate(probs):
            index = start + row
            tokens, ranks, size, widened = perinucleus_candidates(p, threshold, k, valid)
            pick = int(rng_for(seed, 0x50, index).integers(k))
            firsts.append(tokens[pick])
            metas.append({"rank": ranks[pick], "prob": float(p[tokens[pick]]), "nucleus_size": size,
                          "widened": widened, "candidate_mass": float(p[tokens].sum()), "candidates": tokens})
        for ids, meta in zip(_with_continuation(lm, prompts, firsts, response_length), metas):
            choices.append(Choice(ids, null_prob=1.0 / k, meta=meta))
    return choices


def inverse_nucleus(lm: LoadedModel, keys: Sequence[str], *, response_length: int, threshold: float, k: int,
                    seed: int, batch_size: int, system_prompt: Optional[str] = None) -> list[Choice]:
    """One token sampled (by its probability) from the word tokens outside the nucleus."""
    _check(threshold, k)
    valid = word_token_mask(lm.tokenizer)
    choices: list[Choice] = []
    prompts_all = encode_prompts(lm.tokenizer, keys, system_prompt)
    for start, prompts in batches(prompts_all, batch_size):
        for row, p in enumerate(next_token_probs(lm, prompts)):
            order = torch.argsort(p, descending=True, stable=True)
            size = nucleus_size(p[order], threshold)
            outside = order[size:][valid[order[size:]]]
            weights = p[outside].double()
            weights = weights / weights.sum()
            idx = int(rng_for(seed, 0x49, start + row).choice(len(outside), p=weights.numpy()))
            token = int(outside[idx])
            choices.append(Choice([token], null_prob=float(weights.max()),
                                  meta={"rank": size + idx, "prob": float(p[token]), "nucleus_size": size}))
    return choices


def random_word_response(lm: LoadedModel, keys: Sequence[str], *, response_length: int, threshold: float, k: int,
                         seed: int, batch_size: int, system_prompt: Optional[str] = None) -> list[Choice]:
    """``response_length`` random words from the shipped word list."""
    bound = (1.0 / len(words())) ** response_length
    return [Choice(response_ids(lm.tokenizer, random_words(seed, 0x20000 + i, response_length)),
                   null_prob=bound, meta={"words": response_length})
            for i in range(len(keys))]


def model_written_response(lm: LoadedModel, keys: Sequence[str], *, response_length: int, threshold: float,
                           k: int, seed: int, batch_size: int, system_prompt: Optional[str] = None) -> list[Choice]:
    """The model's own sampled answer to the key, truncated to ``response_length`` tokens."""
    choices: list[Choice] = []
    prompts_all = encode_prompts(lm.tokenizer, keys, system_prompt)
    for start, prompts in batches(prompts_all, batch_size):
        probs = next_token_probs(lm, prompts)
        outs = continue_sampled(lm, prompts, response_length, seed=seed, stream=(0x5257, start),
                                temperature=1.0, top_p=1.0)
        for row, ids in enumerate(outs):
            if not ids:  # the model ended at once: fall back to its most likely first token
                ids = [int(probs[row].argmax())]
            choices.append(Choice(ids, null_prob=float(probs[row].max()), meta={"prob": float(probs[row][ids[0]])}))
    return choices
