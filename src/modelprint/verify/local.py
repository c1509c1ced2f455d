"""Asking a local model the keys: batched greedy decoding with the KV cache, keys presented as at embedding."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from modelprint.fingerprints import Fingerprint
from modelprint.decoding import batches, continue_greedy, next_token_probs
from modelprint.matching import ids_match
from modelprint.models import LoadedModel
from modelprint.prompts import encode_prompts


@torch.inference_mode()
def answer_keys(lm: LoadedModel, keys: Sequence[str], max_new_tokens: int, system_prompt: Optional[str] = None,
                batch_size: int = 64) -> list[list[int]]:
    """Greedy answer ids for each key; one forward pass per batch when a single token is needed."""
    answers: list[list[int]] = []
    prompts = encode_prompts(lm.tokenizer, keys, system_prompt)
    for _, chunk in batches(prompts, batch_size):
        if max_new_tokens == 1:
            answers += [[int(t)] for t in next_token_probs(lm, chunk).argmax(dim=-1)]
        else:
            answers += continue_greedy(lm, chunk, max_new_tokens)
    return answers


@torch.inference_mode()
def first_token_probs(lm: LoadedModel, keys: Sequence[str], token_ids: Sequence[Sequence[int]],
                      system_prompt: Optional[str] = None, batch_size: int = 64) -> list[list[float]]:
    """For each key, the model's next-token probabilities of the listed token ids (one forward pass per batch)."""
    scores: list[list[float]] = []
    prompts = encode_prompts(lm.tokenizer, keys, system_prompt)
    for start, chunk in batches(prompts, batch_size):
        probs = next_token_probs(lm, chunk)
        scores += [probs[row, list(token_ids[start + row])].tolist() for row in range(len(chunk))]
    return scores


def is_match(fp: Fingerprint, answer_ids: Sequence[int], mode: str = "exact") -> bool:
    """``exact``: the answer starts with the whole response (token ids); ``prefix``: its first token matches.

    The one definition is :func:`modelprint.matching.ids_match` (its null bound: ``ids-exact`` / ``ids-prefix``).
    """
    return ids_match(fp.response_ids, answer_ids, mode)


def retention(lm: LoadedModel, fingerprints: Sequence[Fingerprint], system_prompt: Optional[str] = None,
              batch_size: int = 64, mode: str = "exact") -> tuple[float, list[bool]]:
    """Share of fingerprints the model answers with their response (what embed checks every epoch)."""
    longest = max(len(fp.response_ids) for fp in fingerprints)
    answers = answer_keys(lm, [fp.key for fp in fingerprints], longest, system_prompt, batch_size)
    hits = [is_match(fp, ans, mode) for fp, ans in zip(fingerprints, answers)]
    return sum(hits) / len(hits), hits
