"""One shared prefix, many continuations: run the prefix once and reuse its KV cache for a batch.

Chat-templated keys share a long system prompt, multiple-choice options share their question, GCG's
candidates share the template: each runs the common prefix once. This is the one place that talks to
transformers' cache API, which has changed under us before (5.24 renamed ``past_key_values`` to ``cache``
and altered how a cache returned by a forward pass behaves when reused), so the rest of the code never
depends on it: the cache object is created here, filled explicitly, repeated explicitly and passed by the
argument name the installed transformers expects.
"""
from __future__ import annotations

import functools
from typing import Any, Optional

import torch


@functools.lru_cache(maxsize=1)
def cache_argument_name() -> str:
    """``cache`` on transformers ≥ 5.24, ``past_key_values`` before (the old name is deprecated there)."""
    import transformers
    from packaging.version import Version

    return "cache" if Version(transformers.__version__).release >= (5, 24) else "past_key_values"


def with_cache(cache: Optional[Any]) -> dict[str, Any]:
    """Keyword arguments that hand ``cache`` to a model's forward pass (nothing when there is no cache)."""
    if cache is None:
        return {"use_cache": False}
    return {cache_argument_name(): cache, "use_cache": True}


def prefill(model: torch.nn.Module, prefix: list[int], rows: int, device: torch.device) -> tuple[Any, torch.Tensor]:
    """Run ``prefix`` once; return a fresh cache holding it, repeated for ``rows`` rows, and its last logits.

    The cache is ours (never a forward pass's return value) and is consumed by one later forward pass; the
    caller chooses the grad mode (no_grad / inference_mode).
    """
    cache = empty_cache(model)
    out = model(input_ids=torch.tensor([prefix], device=device), logits_to_keep=1, **with_cache(cache))
    if rows > 1:
        cache.batch_repeat_interleave(rows)
    return cache, out.logits[0, -1]


def empty_cache(model: torch.nn.Module) -> Any:
    """A fresh cache for ``model``, filled by the forward passes (or blocks) it is handed to.

    Training uses it too: the keys and values a block writes keep their autograd graph, so rows that attend to a
    prefix run once still send their gradient through it.
    """
    from transformers import DynamicCache

    return DynamicCache(config=model.config)
