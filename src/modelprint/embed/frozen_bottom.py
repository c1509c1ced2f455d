"""Train the top blocks on fixed prompts without re-running the frozen bottom every step.

The margin objective trains the last ``train_layers`` blocks on one fixed set of prompts (the keys and the
ordinary prompts), full-batch, for tens of steps. Every step used to recompute the frozen bottom — 26 of
SmolLM2's 30 blocks — on the same inputs, to the same result. Here each trainable block's inputs are captured
once (what enters the first one, and every block's masks and rotary tables), and a step runs only the top:
its blocks, the final norm and the head at the last position (or the last few, for an anchor's answer).

The prompts of a chunk mostly share a long beginning — the chat template's system prompt is 24 of a key's ~45
tokens and of a one-word anchor's ~31. A chunk whose prompts share ``MIN_SHARED`` or more leading tokens runs them
once per step (one row through the top blocks, its keys and values then repeated for the chunk's rows, gradient
included), and the rows feed only their own tokens: the same logits and gradients for about half the tokens.

The fast path checks itself when built: on the first chunk its logits must equal the whole model's. A layout
it does not know (no ``model.layers`` / ``model.norm``, trainable parameters below the top, LoRA wrappers)
returns ``None`` and the caller runs the whole model as before.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Optional, Sequence

import torch

from modelprint.decoding import common_prefix_length
from modelprint.embed.expansion import transformer_blocks
from modelprint.prefix_cache import empty_cache, with_cache
from modelprint.prompts import pad_left

log = logging.getLogger(__name__)

#: largest |Δ logit| allowed between the fast path and the whole model on the self-check chunk
TOLERANCE = 1e-2
#: a chunk whose prompts share fewer leading tokens feeds them whole (a one-row prefix pass would not pay)
MIN_SHARED = 4


def padded_inputs(prompts: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded ids, attention mask and positions, as every next-token scorer here feeds a model."""
    ids, mask = pad_left(prompts, pad_id)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}


def suffix_inputs(prompts: Sequence[Sequence[int]], shared: int, pad_id: int) -> dict[str, torch.Tensor]:
    """Each prompt's tokens after a ``shared``-token prefix that a cache already holds, left-padded: the mask
    covers the prefix too, and positions continue from it."""
    ids, mask = pad_left([list(p[shared:]) for p in prompts], pad_id)
    return {"input_ids": ids, "attention_mask": torch.cat([torch.ones(len(prompts), shared, dtype=mask.dtype), mask], 1),
            "position_ids": shared + (mask.cumsum(-1) - 1).clamp(min=0)}


class _Stop(Exception):
    """Raised by the capture hook on the last trainable block: nothing above it is needed to capture."""


@dataclasses.dataclass
class _Captured:
    hidden: torch.Tensor                 # what enters the first trainable block
    block_kwargs: list[dict[str, Any]]   # each trainable block's other inputs (the KV cache taken out)
    prefix: Optional["_Captured"] = None  # the chunk's shared prefix (one row), run once per step
    cache_arg: Optional[str] = None      # the keyword the blocks take their KV cache by

    @property
    def shared(self) -> int:
        return int(self.prefix.hidden.shape[1]) if self.prefix is not None else 0


class FrozenBottom:
    """The trainable top of a causal LM, fed from inputs captured once per chunk of prompts."""

    def __init__(self, model: torch.nn.Module, first: int, captured: list[_Captured]) -> None:
        self.model, self.first, self.captured = model, first, captured
        self.top = list(transformer_blocks(model))[first:]

    @classmethod
    @torch.no_grad()
    def build(cls, model: torch.nn.Module, chunks: Sequence[Sequence[Sequence[int]]], pad_id: int,
              device: torch.device, min_shared: int = MIN_SHARED) -> Optional["FrozenBottom"]:
        """Capture every chunk's inputs to the top, or None where the fast path does not apply. Chunks whose prompts
        share ``min_shared`` or more leading tokens run them once per step.

        The capture runs in the model's own precision: build before wrapping the forward pass in autocast, and
        run the top under autocast (the bottom's output is then as exact as the weights allow, and the
        self-check compares like with like — bf16 rounds two ways of computing the same logits differently)."""
        blocks = transformer_blocks(model)
        inner = getattr(model, "model", None)
        if blocks is None or getattr(inner, "norm", None) is None or getattr(model, "lm_head", None) is None:
            return None
        trainable = [i for i, b in enumerate(blocks) if any(p.requires_grad for p in b.parameters())]
        block_params = {id(p) for b in blocks for p in b.parameters()}
        top_params = {id(p) for m in (inner.norm, model.lm_head) for p in m.parameters()}
        stray = [p for p in model.parameters() if p.requires_grad and id(p) not in block_params | top_params]
        embedding = model.get_input_embeddings()
        if not trainable or stray or any(p.requires_grad for p in embedding.parameters()):
            return None  # (a tied head's weight is the input embedding: trained, it changes the bottom too)
        first = trainable[0]
        top = list(blocks)[first:]
        was_training = model.training
        model.eval()
        try:
            captured = [_capture_chunk(model, top, chunk, pad_id, device, min_shared) for chunk in chunks]
        finally:
            model.train(was_training)
        fast = cls(model, first, captured)
        # self-check on the first chunk fed whole and the first fed after a shared prefix
        checked = {next((i for i, c in enumerate(captured) if bool(c.shared) == kind), None) for kind in (False, True)}
        gap = 0.0
        model.eval()
        for index in sorted(i for i in checked if i is not None):
            whole = model(**{k: v.to(device) for k, v in padded_inputs(chunks[index], pad_id).items()},
                          use_cache=False, logits_to_keep=1).logits[:, -1].float()
            gap = max(gap, float((whole - fast.logits(index)).abs().max()))
        model.train(was_training)
        if gap > TOLERANCE:
            log.warning("frozen-bottom fast path disagrees with the whole model (max |Δ logit| %.3g): not used", gap)
            return None
        fed = sum(c.hidden.shape[0] * c.hidden.shape[1] + c.shared for c in captured)
        whole_tokens = sum(len(chunk) * max(len(p) for p in chunk) for chunk in chunks)
        log.info("training on blocks %d–%d only (frozen bottom captured once; shared prefixes leave %d of %d tokens "
                 "per step; self-check |Δ logit| %.1e)", first, len(blocks) - 1, fed, whole_tokens, gap)
        return fast

    def logits(self, index: int) -> torch.Tensor:
        """Next-token logits after each prompt of chunk ``index`` ([n, vocab], float32), through the top only."""
        return self.last_logits(index, 1)[:, -1]

    def last_logits(self, index: int, count: int) -> torch.Tensor:
        """Logits at the last ``count`` positions of chunk ``index`` ([n, count, vocab], float32): the head runs
        there only (an anchor's answer positions, when its answer is part of the captured input)."""
        c = self.captured[index]
        cache = None
        if c.prefix is not None:  # the prefix once, its keys and values (with their graph) shared by every row
            cache = empty_cache(self.model)
            self._run_top(c.prefix, cache)
            cache.batch_repeat_interleave(c.hidden.shape[0])
        hidden = self._run_top(c, cache)
        logits = self.model.lm_head(self.model.model.norm(hidden[:, -count:])).float()
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits


    def _run_top(self, c: _Captured, cache: Any) -> torch.Tensor:
        hidden = c.hidden
        for block, kwargs in zip(self.top, c.block_kwargs):
            out = block(hidden, **({**kwargs, c.cache_arg: cache} if c.cache_arg else kwargs))
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden


def _capture(model: torch.nn.Module, top: Sequence[torch.nn.Module], inputs: dict[str, Any],
             cache: Any = None) -> _Captured:
    """Run the model on ``inputs`` up to its last trainable block, recording what enters each trainable block."""
    current: dict[str, Any] = {"kwargs": []}

    def hook(index: int):
        def capture(module, args, kwargs):
            if index == 0:
                current["hidden"] = (args[0] if args else kwargs["hidden_states"]).detach()
            current["kwargs"].append(_detached({k: v for k, v in kwargs.items() if k != "hidden_states"}))
            if index == len(top) - 1:
                raise _Stop
        return capture

    handles = [b.register_forward_pre_hook(hook(i), with_kwargs=True) for i, b in enumerate(top)]
    try:
        model(**inputs, **with_cache(cache), logits_to_keep=1)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    cache_arg = None
    if cache is not None:  # the blocks' cache is replaced every step: keep its keyword, not the capture's object
        cache_arg = next((k for k, v in current["kwargs"][0].items() if v is cache), None)
        for kwargs in current["kwargs"]:
            kwargs.pop(cache_arg, None)
    return _Captured(current["hidden"], current["kwargs"], cache_arg=cache_arg)


def _capture_chunk(model: torch.nn.Module, top: Sequence[torch.nn.Module], chunk: Sequence[Sequence[int]],
                   pad_id: int, device: torch.device, min_shared: int) -> _Captured:
    """One chunk's inputs to the top: its shared prefix (one row) and the rows' own tokens after it when the rows
    share at least ``min_shared`` tokens, else the whole left-padded rows."""
    on = lambda inputs: {k: v.to(device) for k, v in inputs.items()}  # noqa: E731
    shared = common_prefix_length(chunk) if len(chunk) > 1 else 0
    if shared >= min_shared:
        cache = empty_cache(model)
        prefix = _capture(model, top, on({"input_ids": torch.tensor([list(chunk[0][:shared])])}), cache)
        if prefix.cache_arg is not None:
            cache.batch_repeat_interleave(len(chunk))
            rows = _capture(model, top, on(suffix_inputs(chunk, shared, pad_id)), cache)
            if rows.cache_arg == prefix.cache_arg:
                return dataclasses.replace(rows, prefix=prefix)
    return _capture(model, top, on(padded_inputs(chunk, pad_id)))


def _detached(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, tuple):
        return tuple(_detached(v) for v in value)
    if isinstance(value, list):
        return [_detached(v) for v in value]
    if isinstance(value, dict):
        return {k: _detached(v) for k, v in value.items()}
    return value
