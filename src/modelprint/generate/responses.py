"""Response choosers: Perinucleus, inverse nucleus, random words, model-written text.

Each returns one :class:`Choice` per key with ``meta["bounds"]``: for every comparison verify can make
(:mod:`modelprint.matching`: ``ids-exact``, ``ids-prefix``, ``text-exact``, ``text-prefix``, and
``candidate`` where candidates are recorded) an upper bound on the chance that a model *not derived from
the fingerprinted one* matches the key, computed from what our secret randomness drew the response from, so
it holds whatever the suspect model is. ``null_prob`` is the ``ids-exact`` bound.

* Perinucleus picks uniformly among k candidates kept prefix-free in every space (a below-nucleus word
  token that collides with an already chosen one is skipped, counted in ``widened``): 1/k everywhere, and
  the candidates' ids and decoded texts are recorded so verify can recompute it.
* Random words are drawn from :func:`~modelprint.wordlist.word_pool`, prefix-free in every space
  but first tokens; the pool's name, size and digest are recorded.
* Inverse nucleus and model-written responses are sampled: their bounds are the heaviest chains / groups
  of the full next-token distribution they were sampled from (recorded; verify cannot recompute them).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from modelprint.errors import ConfigError, ModelprintError
from modelprint.decoding import (batches, continue_greedy, continue_sampled, next_token_probs, token_texts,
                                          word_token_mask)
from modelprint.generate.blueprint import Choice
from modelprint.wordlist import pool_meta, rng_for, word_pool
from modelprint.matching import ChainIndex, collides, first_token_bounds, token_text_key
from modelprint.models import LoadedModel
from modelprint.prompts import encode_prompts, response_ids


def nucleus_size(sorted_probs: torch.Tensor, threshold: float) -> int:
    """Smallest number of top tokens whose probability mass reaches ``threshold``."""
    cumulative = torch.cumsum(sorted_probs.double(), dim=0)
    return int(torch.searchsorted(cumulative, torch.tensor([threshold], dtype=torch.float64)).item()) + 1


def perinucleus_candidates(probs: torch.Tensor, threshold: float, k: int, valid: torch.Tensor,
                           texts: Optional[Sequence[str]] = None) -> tuple[list[int], list[int], int, int]:
    """The k valid tokens ranked just below the nucleus, prefix-free as verify compares them.

    With ``texts`` (each token decoded), a token that one fixed answer could match together with an already
    chosen candidate (:func:`modelprint.matching.collides`: " The" / "The" / "There") is skipped.
    Returns (token ids, their 0-based ranks, nucleus size, how many tokens below the nucleus were skipped).
    """
    order = torch.argsort(probs, descending=True, stable=True)
    sorted_probs = probs[order]
    size = nucleus_size(sorted_probs, threshold)
    tail = order[size:]
    chosen: list[int] = []
    positions: list[int] = []
    for pos in valid[tail].nonzero().flatten().tolist():
        token = int(tail[pos])
        if texts is not None and any(collides(([token], texts[token]), ([c], texts[c])) for c in chosen):
            continue
        chosen.append(token)
        positions.append(pos)
        if len(chosen) == k:
            break
    if len(chosen) < k:
        raise ModelprintError("fewer than k word tokens lie below the nucleus; lower --nucleus-threshold or --nucleus-k")
    ranks = [p + size for p in positions]
    return chosen, ranks, size, positions[-1] + 1 - k


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
    texts = token_texts(lm.tokenizer)
    choices: list[Choice] = []
    prompts_all = encode_prompts(lm.tokenizer, keys, system_prompt)
    for start, prompts in tqdm(list(batches(prompts_all, batch_size)), desc="choosing responses", leave=False):
        probs = next_token_probs(lm, prompts)
        firsts, metas = [], []
        for row, p in enumerate(probs):
            index = start + row
            tokens, ranks, size, widened = perinucleus_candidates(p, threshold, k, valid, texts)
            pick = int(rng_for(seed, 0x50, index).integers(k))
            firsts.append(tokens[pick])
            candidate_texts = [texts[t] for t in tokens]
            metas.append({"rank": ranks[pick], "prob": float(p[tokens[pick]]), "nucleus_size": size,
                          "widened": widened, "candidate_mass": float(p[tokens].sum()), "candidates": tokens,
                          "candidate_texts": candidate_texts,
                          "bounds": first_token_bounds(tokens, candidate_texts, candidate=True)})
        for ids, meta in zip(_with_continuation(lm, prompts, firsts, response_length), metas):
            choices.append(Choice(ids, null_prob=meta["bounds"]["ids-exact"], meta=meta))
    return choices


def _vocab_chains(tokenizer) -> dict[str, ChainIndex]:
    """Chain indexes over the whole vocabulary's first-token keys (built once per tokenizer object)."""
    chains = getattr(tokenizer, "_modelprint_vocab_chains", None)
    texts = token_texts(tokenizer)
    if chains is None or len(chains["exact"].group) != len(texts):
        special = set(tokenizer.all_special_ids)
        chains = {mode: ChainIndex(["" if i in special else token_text_key(t, mode) for i, t in enumerate(texts)])
                  for mode in ("exact", "prefix")}
        tokenizer._modelprint_vocab_chains = chains
    return chains


def distribution_bounds(tokenizer, weights: np.ndarray, wild: float = 0.0) -> dict[str, float]:
    """Bounds for a response whose first token is drawn from ``weights`` over the vocabulary.

    ``wild``: extra mass of draws after which the response could be anything (e.g. an end token replaced
    by the model's greedy token): it is added to every bound. Special tokens' own weights count as wild.
    """
    weights = np.asarray(weights, dtype=np.float64)
    special = list(set(tokenizer.all_special_ids))
    wild = wild + float(weights[special].sum())
    ordinary = weights.copy()
    ordinary[special] = 0.0
    chains = _vocab_chains(tokenizer)
    top = float(ordinary.max())
    return {"ids-exact": min(1.0, top + wild), "ids-prefix": min(1.0, top + wild),
            "text-exact": min(1.0, chains["exact"].bound(weights)),  # special tokens have key "": in every chain
            "text-prefix": min(1.0, chains["prefix"].bound(weights))}


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
            full = np.zeros(len(p))
            full[outside.numpy()] = weights.numpy()
            bounds = distribution_bounds(lm.tokenizer, full)
            choices.append(Choice([token], null_prob=bounds["ids-exact"],
                                  meta={"rank": size + idx, "prob": float(p[token]), "nucleus_size": size,
                                        "bounds": bounds}))
    return choices


def pool_response_ids(pool, picks: Sequence[int]) -> list[int]:
    """The response's ids: the first word as it starts a response, later ones after a space (concatenated)."""
    return [t for n, i in enumerate(picks) for t in (pool.first if n == 0 else pool.later)[int(i)]]


def random_word_response(lm: LoadedModel, keys: Sequence[str], *, response_length: int, threshold: float, k: int,
                         seed: int, batch_size: int, system_prompt: Optional[str] = None) -> list[Choice]:
    """``response_length`` words drawn uniformly from the prefix-free word pool."""
    pool = word_pool(lm.tokenizer)
    if not pool.words:
        raise ModelprintError("the tokenizer leaves no prefix-free word pool for random-word responses")
    meta = pool_meta(pool, response_length)
    choices = []
    for i in range(len(keys)):
        picks = rng_for(seed, 0x57, 0x20000 + i).integers(0, len(pool.words), size=response_length)
        choices.append(Choice(pool_response_ids(pool, picks), null_prob=meta["bounds"]["ids-exact"],
                              meta=dict(meta)))
    return choices


def _sampling_weights(lm: LoadedModel, probs: torch.Tensor) -> np.ndarray:
    """The first-token distribution ``continue_sampled`` draws from (temperature 1, the model's top-k, top-p 1)."""
    weights = probs.double().numpy().copy()
    top_k = getattr(getattr(lm.model, "generation_config", None), "top_k", None)
    if top_k and top_k < len(weights):
        weights[np.argsort(-weights, kind="stable")[top_k:]] = 0.0
    return weights / weights.sum()


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
            # an end token drawn first turns the response into the greedy token: special tokens count as wild
            bounds = distribution_bounds(lm.tokenizer, _sampling_weights(lm, probs[row]))
            choices.append(Choice(ids, null_prob=bounds["ids-exact"],
                                  meta={"prob": float(probs[row][ids[0]]), "bounds": bounds}))
    return choices
