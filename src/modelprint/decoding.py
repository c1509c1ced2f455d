"""Batched next-token distributions and the one greedy (and seeded sampled) decoder: a ground-floor kernel.

generate (response choosers), verify (asking local keys), embed (benign answers), evaluation and the peer
schemes all decode through :func:`continue_greedy`, so "the model's greedy answer" means one thing.
"""
from __future__ import annotations

from typing import Collection, Optional, Sequence

import torch

from modelprint.seeds import torch_seed
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
    last = torch.tensor([len(s) - 1 for s in suffixes], device=lm.device)
    # the head (a vocabulary-wide matmul per position) runs at each row's last real position only
    logits = lm.model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device), logits_to_keep=last[:, None],
                      **with_cache(cache)).logits
    if logits.shape[1] == 1:
        picked = logits[:, 0]
    else:  # a model class that ignores logits_to_keep returns every position
        picked = logits[torch.arange(len(prompts), device=logits.device), last]
    return torch.softmax(picked.float(), dim=-1).cpu()


def model_stop_ids(lm: LoadedModel) -> set[int]:
    """The generation config's end-of-sequence ids plus the tokenizer's (a chat model's end of turn too)."""
    ids: set[int] = set()
    eos = getattr(getattr(lm.model, "generation_config", None), "eos_token_id", None)
    for value in (eos, lm.tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(int(v) for v in value)
    return ids


@torch.inference_mode()
def continue_greedy(lm: LoadedModel, prompts: Sequence[Sequence[int]], max_new_tokens: int, *,
                    stop_ids: Optional[Collection[int]] = None, model_defaults: bool = True,
                    **generate_kwargs) -> list[list[int]]:
    """Greedy continuation of one batch of prompts (left-padded, KV cache), cut before the first stop id.

    The two stop rules in use are explicit, because their callers need different ones:

    * ``stop_ids=None`` (fingerprints: generate, verify, embed, schemes): only the tokenizer's EOS ends a
      continuation, and the model's own ``generation_config`` fills every option not given here — what
      fingerprint responses have always been decoded (and recorded) with.
    * ``stop_ids=model_stop_ids(lm)`` with ``model_defaults=False`` (evaluation): any EOS of the model ends it
      and a fresh greedy config is used, so two models' answers compare like with like.

    Pad ids never belong to a continuation (they are dropped). ``generate_kwargs`` go to ``model.generate``
    (e.g. a watermark's ``logits_processor``).
    """
    if max_new_tokens <= 0:
        return [[] for _ in prompts]
    return _generate(lm, prompts, max_new_tokens, stop_ids=stop_ids, model_defaults=model_defaults,
                     do_sample=False, **generate_kwargs)


@torch.inference_mode()
def continue_sampled(lm: LoadedModel, prompts: Sequence[Sequence[int]], max_new_tokens: int, seed: int,
                     temperature: float = 1.0, top_p: float = 0.95, stream: Sequence[int] = (),
                     share_prefix: bool = False) -> list[list[int]]:
    """Seeded sampling (same seed, stream and batch → same text); used for model-written keys.

    ``seed`` is the set's secret (any width); torch is seeded with 64 bits derived from all of it and ``stream``.
    ``share_prefix``: run the prompts' common prefix once and reuse its KV cache for every row (see
    :func:`_generate`); the sampled text is the same as without it (tested), only the prompt pass is cheaper.
    """
    torch.manual_seed(torch_seed(seed, *stream))
    return _generate(lm, prompts, max_new_tokens, share_prefix=share_prefix, do_sample=True,
                     temperature=temperature, top_p=top_p)


def _generate(lm: LoadedModel, prompts: Sequence[Sequence[int]], max_new_tokens: int, *,
              stop_ids: Optional[Collection[int]] = None, model_defaults: bool = True, share_prefix: bool = False,
              **kwargs) -> list[list[int]]:
    tok = lm.tokenizer
    stop = {tok.eos_token_id} if stop_ids is None else set(stop_ids)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else min(stop, default=0)
    eos = tok.eos_token_id if stop_ids is None else (sorted(stop) or None)
    options = dict(max_new_tokens=max_new_tokens, pad_token_id=pad_id, eos_token_id=eos, **kwargs)
    if not model_defaults:  # a fresh config: nothing from the model's generation_config leaks in
        from transformers import GenerationConfig

        options = {"generation_config": GenerationConfig(num_beams=1, **options)}
    shared = common_prefix_length(prompts) if share_prefix and len(prompts) > 1 else 0
    if shared:
        # [shared prefix | pads | own suffix]: the prefix is computed once (its cache repeated per row); the
        # pads sit between prefix and suffix, masked, and positions come from the mask (cumsum), so every real
        # token keeps the position it has when the whole prompt is left-padded.
        ids, mask = pad_left([p[shared:] for p in prompts], pad_id)
        rows = len(prompts)
        ids = torch.cat([torch.tensor([list(prompts[0][:shared])] * rows, dtype=ids.dtype), ids], dim=1)
        mask = torch.cat([torch.ones((rows, shared), dtype=mask.dtype), mask], dim=1)
        options.update(with_cache(prefill(lm.model, list(prompts[0][:shared]), rows, lm.device)[0]))
    else:
        ids, mask = pad_left(prompts, pad_id)
    out = lm.model.generate(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device), **options)
    result = []
    for row in out[:, ids.shape[1]:].cpu().tolist():
        cut = next((k for k, t in enumerate(row) if t in stop), len(row))
        result.append([t for t in row[:cut] if t != pad_id])
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
