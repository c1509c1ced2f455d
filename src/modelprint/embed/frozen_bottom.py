"""Train the top blocks on fixed prompts without re-running the frozen bottom every step.

The margin objective trains the last ``train_layers`` blocks on one fixed set of prompts (the keys and the
ordinary prompts), full-batch, for tens of steps. Every step used to recompute the frozen bottom — 26 of
SmolLM2's 30 blocks — on the same inputs, to the same result. Here each trainable block's inputs are captured
once (what enters the first one, and every block's masks and rotary tables), and a step runs only the top:
its blocks, the final norm and the head at the last position (or the last few, for an anchor's answer).

The fast path checks itself when built: on the first chunk its logits must equal the whole model's. A layout
it does not know (no ``model.layers`` / ``model.norm``, trainable parameters below the top, LoRA wrappers)
returns ``None`` and the caller runs the whole model as before.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Optional, Sequence

import torch

from modelprint.embed.expansion import transformer_blocks
from modelprint.prompts import pad_left

log = logging.getLogger(__name__)

#: largest |Δ logit| allowed between the fast path and the whole model on the self-check chunk
TOLERANCE = 1e-2


def padded_inputs(prompts: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded ids, attention mask and positions, as every next-token scorer here feeds a model."""
    ids, mask = pad_left(prompts, pad_id)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}


class _Stop(Exception):
    """Raised by the capture hook on the last trainable block: nothing above it is needed to capture."""


@dataclasses.dataclass
class _Captured:
    hidden: torch.Tensor                 # what enters the first trainable block
    block_kwargs: list[dict[str, Any]]   # each trainable block's other inputs


class FrozenBottom:
    """The trainable top of a causal LM, fed from inputs captured once per chunk of prompts."""

    def __init__(self, model: torch.nn.Module, first: int, captured: list[_Captured]) -> None:
        self.model, self.first, self.captured = model, first, captured
        self.top = list(transformer_blocks(model))[first:]

    @classmethod
    @torch.no_grad()
    def build(cls, model: torch.nn.Module, chunks: Sequence[Sequence[Sequence[int]]], pad_id: int,
              device: torch.device, autocast: Callable[[], Any]) -> Optional["FrozenBottom"]:
        """Capture every chunk's inputs to the top, or None where the fast path does not apply."""
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
        captured: list[_Captured] = []
        current: dict[str, Any] = {}

        def hook(index: int):
            def capture(module, args, kwargs):
                hidden = args[0] if args else kwargs["hidden_states"]
                if index == 0:
                    current["hidden"] = hidden.detach()
                rest = {k: v for k, v in kwargs.items() if k != "hidden_states"}
                current.setdefault("kwargs", []).append(_detached(rest))
                if index == len(top) - 1:
                    raise _Stop
            return capture

        handles = [b.register_forward_pre_hook(hook(i), with_kwargs=True) for i, b in enumerate(top)]
        was_training = model.training
        model.eval()
        try:
            for chunk in chunks:
                current.clear()
                inputs = {k: v.to(device) for k, v in padded_inputs(chunk, pad_id).items()}
                try:
                    with autocast():
                        model(**inputs, use_cache=False, logits_to_keep=1)
                except _Stop:
                    pass
                captured.append(_Captured(current["hidden"], current["kwargs"]))
        finally:
            for h in handles:
                h.remove()
        fast = cls(model, first, captured)
        with autocast():
            whole = model(**{k: v.to(device) for k, v in padded_inputs(chunks[0], pad_id).items()},
                          use_cache=False, logits_to_keep=1).logits[:, -1].float()
            mine = fast.logits(0)
        model.train(was_training)
        gap = float((whole - mine).abs().max())
        if gap > TOLERANCE:
            log.warning("frozen-bottom fast path disagrees with the whole model (max |Δ logit| %.3g): not used", gap)
            return None
        log.info("training on blocks %d–%d only (frozen bottom captured once; self-check |Δ logit| %.1e)",
                 first, len(blocks) - 1, gap)
        return fast

    def logits(self, index: int) -> torch.Tensor:
        """Next-token logits after each prompt of chunk ``index`` ([n, vocab], float32), through the top only."""
        return self.last_logits(index, 1)[:, -1]

    def last_logits(self, index: int, count: int) -> torch.Tensor:
        """Logits at the last ``count`` positions of chunk ``index`` ([n, count, vocab], float32): the head runs
        there only (an anchor's answer positions, when its answer is part of the captured input)."""
        c = self.captured[index]
        hidden = c.hidden
        for block, kwargs in zip(self.top, c.block_kwargs):
            out = block(hidden, **kwargs)
            hidden = out[0] if isinstance(out, tuple) else out
        logits = self.model.lm_head(self.model.model.norm(hidden[:, -count:])).float()
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits


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
