"""Batched forward passes and greedy/sampled continuation shared by the response choosers."""
from __future__ import annotations

from typing import Sequence

import torch

from modelprint.generate.seeds import torch_seed
from modelprint.models import LoadedModel
from modelprint.prefix_cache import prefill, with_cache
from modelprint.prompts import pad_left


def batches(items: Sequence, size: int):
    for start in range(0, len(items), size):
        yield start, items[start:start + size]


def common_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Length of the longest prefix shared by every prompt, leaving each at least one own token."""
    shortest = min(len(p) for p in prompts)
    first = prompts[0]
    n = 0
    while n < shortest - 1 and all(p[n] == first[n] for p in prompts):
        n += 1
    return n


@torch.inference_mode()
def next_token_probs(lm: LoadedModel, prompts: Sequence[Sequence[int]]) -> torch.Tensor:
    """Next-token distribution after each prompt, float32 on CPU.

    Prompts rendered through a chat template share a long prefix (system prompt,
    role markers); it is computed once and its KV cache reused for the batch,
    and the right-padded suffixes are read at each row's last real position.
    """
    shared = common_prefix_length(prompts)
    suffixes = [list(p[shared:]) for p in prompts]
    width = max(len(s) for s in suffixes)
    ids = torch.full((len(prompts), width), lm.tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), shared + width), dtype=torch.long)
    mask[:, :shared] = 1
    for row, suffix in enumerate(suffixes):
        ids[row, :len(suffix)] = torch.tensor(suffix)
        mask[row, shared:shared + len(suffix)] = 1
    cache = prefill(lm.model, list(prompts[0][:shared]), len(prompts), lm.device)[0] if shared else None
    logits = lm.model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device), **with_cache(cache)).logits
    last = torch.tensor([len(s) - 1 for s in suffixes], device=logits.device)
    picked = logits[torch.arange(len(prompts), device=logits.device), last]
    return torch.softmax(picked.float(), dim=-1).cpu()


@torch.inference_mode()
def continue_greedy(lm: LoadedModel, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                    **generate_kwargs) -> list[list[int]]:
    """Greedy continuation of each prompt (KV cache, batched); stops at EOS.

    ``generate_kwargs`` go to ``model.generate`` (e.g. a watermark's ``logits_processor``).
    """
    if max_new_tokens <= 0:
        return [[] for _ in prompts]
    return _generate(lm, prompts, max_new_tokens, do_sample=False, **generate_kwargs)


@torch.inference_mode()
def continue_sampled(lm: LoadedModel, prompts: Sequence[Sequence[int]], max_new_tokens: int, seed: int,
                     temperature: float = 1.0, top_p: float = 0.95, stream: Sequence[int] = ()) -> list[list[int]]:
    """Seeded sampling (same seed, stream and batch → same text); used for model-written keys.

    ``seed`` is the set's secret (any width); torch is seeded with 64 bits derived from all of it and ``stream``.
    """
    torch.manual_seed(torch_seed(seed, *stream))
    return _generate(lm, prompts, max_new_tokens, do_sample=True, temperature=temperature, top_p=top_p)


def _generate(lm: LoadedModel, prompts: Sequence[Sequence[int]], max_new_tokens: int, **kwargs) -> list[list[int]]:
    tok = lm.tokenizer
    ids, mask = pad_left(prompts, tok.pad_token_id)
    out = lm.model.generate(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device),
                            max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                            eos_token_id=tok.eos_token_id, **kwargs)
    new = out[:, ids.shape[1]:].cpu().tolist()
    result = []
    for row in new:
        if tok.eos_token_id in row:
            row = row[:row.index(tok.eos_token_id)]
        result.append([t for t in row if t != tok.pad_token_id])
    return result


def _is_word(text: str) -> bool:
    text = text.strip()
    return len(text) >= 2 and text.isalnum()


def token_texts(tokenizer) -> list[str]:
    """Every vocabulary token decoded on its own (computed once per tokenizer object and kept on it)."""
    texts = getattr(tokenizer, "_modelprint_token_texts", None)
    if texts is None or len(texts) != len(tokenizer):
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        tokenizer._modelprint_token_texts = texts
    return texts


def word_token_mask(tokenizer) -> torch.Tensor:
    """True for vocabulary tokens that decode to a word of ≥ 2 letters or digits (after stripping spaces).

    Computed once per tokenizer object and kept on it.
    """
    mask = getattr(tokenizer, "_modelprint_word_mask", None)
    if mask is None or len(mask) != len(tokenizer):
        texts = token_texts(tokenizer)
        special = set(tokenizer.all_special_ids)
        mask = torch.tensor([i not in special and _is_word(t) for i, t in enumerate(texts)], dtype=torch.bool)
        tokenizer._modelprint_word_mask = mask
    return mask
