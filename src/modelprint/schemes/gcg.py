"""Greedy Coordinate Gradient (GCG) prompt search, small budgets (Zou et al., "Universal and Transferable
Adversarial Attacks on Aligned Language Models", 2023) — the optimiser RoFL uses to find fingerprint prompts.

The free prompt tokens sit inside the exact rendering verify uses (``prompts.render_prompt``: chat
template around the key text). Each step takes the gradient of the target's cross-entropy with
respect to a one-hot encoding of the free tokens, proposes single-token swaps from the top-k most
promising tokens per position, evaluates a batch of them and keeps the best. Only tokens that decode
and re-encode to themselves are proposed, and a candidate is kept only if its decoded text re-encodes
(inside the template) to the same ids, so what was optimised is what verify will send.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Optional, Sequence

import numpy as np
import torch

from modelprint.models import LoadedModel
from modelprint.prefix_cache import prefill, with_cache
from modelprint.prompts import encode_prompt, render_prompt

log = logging.getLogger(__name__)

_MARK = "\u2063MODELPRINT-GCG\u2063"  # a key text no template contains, to split the rendering around the key


@dataclasses.dataclass(frozen=True)
class Frame:
    """Token ids the template puts before and after the free tokens.

    ``tail`` is fixed key text after the free tokens (its ids lead ``suffix``): ProFLingo's
    " simply answer: <question>". ``forbid``: casefolded strings the free tokens' text may not contain.
    """

    prefix: list[int]
    suffix: list[int]
    system_prompt: Optional[str] = None
    tail: str = ""
    forbid: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Budget:
    """How hard to search: swaps proposed per position, candidates evaluated per step, steps at most."""

    top_k: int = 64
    candidates: int = 32
    max_steps: int = 64


@dataclasses.dataclass
class GCGResult:
    prompt_ids: list[int]
    loss: float
    steps: int
    elicits: bool  # greedy decoding of the rendered prompt yields the target


def frame(tokenizer, system_prompt: Optional[str] = None, tail: str = "", forbid: Sequence[str] = ()) -> Frame:
    """Split the rendered prompt around the free tokens; the prefix carries the special tokens encode_prompt adds."""
    text = render_prompt(tokenizer, _MARK + tail, system_prompt)
    before, after = text.split(_MARK)
    chat = bool(getattr(tokenizer, "chat_template", None))
    prefix = list(tokenizer(before, add_special_tokens=not chat)["input_ids"]) if before else []
    if not chat and not before and tokenizer.bos_token_id is not None:
        prefix = list(tokenizer("", add_special_tokens=True)["input_ids"])
    suffix = list(tokenizer(after, add_special_tokens=False)["input_ids"]) if after else []
    return Frame(prefix, suffix, system_prompt, tail, tuple(f.casefold() for f in forbid))


def key_text(tokenizer, ids: Sequence[int], fr: Frame) -> str:
    """The key verify will send: the free tokens' text, then the frame's fixed tail."""
    return tokenizer.decode(list(ids)) + fr.tail


def renders_as(tokenizer, ids: Sequence[int], fr: Frame) -> bool:
    """True when the key text, rendered as verify renders it, encodes to prefix + ids + suffix (and the free
    tokens' text contains none of ``fr.forbid``)."""
    free = tokenizer.decode(list(ids))
    if not free.strip() or any(f in free.casefold() for f in fr.forbid):
        return False
    return encode_prompt(tokenizer, free + fr.tail, fr.system_prompt) == fr.prefix + list(ids) + fr.suffix


def roundtrip_tokens(tokenizer) -> torch.Tensor:
    """Mask of tokens worth proposing: not special, printable ASCII without line breaks, and decode→encode
    gives the token back. Computed once per tokenizer object and kept on it."""
    mask = getattr(tokenizer, "_modelprint_gcg_mask", None)
    if mask is None or len(mask) != len(tokenizer):
        special = set(tokenizer.all_special_ids)
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        ok = [i not in special and t.strip() != "" and t.isascii() and t.isprintable() for i, t in enumerate(texts)]
        encoded = tokenizer([t if o else "" for t, o in zip(texts, ok)], add_special_tokens=False)["input_ids"]
        mask = torch.tensor([o and e == [i] for i, (o, e) in enumerate(zip(ok, encoded))], dtype=torch.bool)
        tokenizer._modelprint_gcg_mask = mask
    return mask


def _embed_rows(lm: LoadedModel, ids: Sequence[int]) -> torch.Tensor:
    return lm.model.get_input_embeddings()(torch.tensor([list(ids)], device=lm.device))


def _token_gradient(lm: LoadedModel, fr: Frame, prompt: list[int], target: list[int]) -> torch.Tensor:
    """d loss / d one-hot(prompt), shape (len(prompt), vocab)."""
    weight = lm.model.get_input_embeddings().weight
    one_hot = torch.zeros(len(prompt), weight.shape[0], device=lm.device, dtype=weight.dtype)
    one_hot[torch.arange(len(prompt)), torch.tensor(prompt, device=lm.device)] = 1.0
    one_hot.requires_grad_(True)
    with torch.enable_grad():
        return _one_hot_gradient(lm, fr, one_hot, weight, len(prompt), target)


def _one_hot_gradient(lm: LoadedModel, fr: Frame, one_hot: torch.Tensor, weight: torch.Tensor, length: int,
                      target: list[int]) -> torch.Tensor:
    embeds = torch.cat([_embed_rows(lm, fr.prefix), (one_hot @ weight).unsqueeze(0),
                        _embed_rows(lm, fr.suffix + target)], dim=1)
    logits = lm.model(inputs_embeds=embeds).logits[0]
    start = len(fr.prefix) + length + len(fr.suffix)
    loss = torch.nn.functional.cross_entropy(logits[start - 1:start - 1 + len(target)].float(),
                                             torch.tensor(target, device=lm.device))
    loss.backward()
    return one_hot.grad.detach()


@torch.no_grad()
def evaluate_targets(lm: LoadedModel, fr: Frame, prompts: list[list[int]],
              target: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-candidate target loss and whether greedy decoding yields the target (teacher-forced argmax = greedy).

    The template prefix is computed once and its KV cache shared; logits only at the target positions.
    """
    cache = prefill(lm.model, fr.prefix, len(prompts), lm.device)[0] if fr.prefix else None
    rows = torch.tensor([p + fr.suffix + target for p in prompts], device=lm.device)
    logits = lm.model(input_ids=rows, logits_to_keep=len(target) + 1, **with_cache(cache)).logits[:, :-1].float()
    goal = torch.tensor(target, device=lm.device).expand(len(prompts), -1)
    losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), goal, reduction="none").mean(dim=1)
    hits = (logits.argmax(dim=-1) == goal).all(dim=1)
    return losses.cpu(), hits.cpu()


def optimise(lm: LoadedModel, target: list[int], init: list[int], fr: Frame, budget: Budget,
             rng: np.random.Generator) -> GCGResult:
    """GCG from ``init`` until greedy decoding gives ``target`` or ``budget.max_steps`` steps pass.

    ``init`` must itself satisfy :func:`renders_as`; every accepted step keeps that property.
    """
    allowed = roundtrip_tokens(lm.tokenizer).to(lm.device)
    current = list(init)
    loss, hit = (float(x[0]) for x in evaluate_targets(lm, fr, [current], target))
    step = 0
    model_was_training = lm.model.training
    lm.model.eval()
    params = [p for p in lm.model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)  # only the one-hot needs a gradient
    try:
        while not hit and step < budget.max_steps:
            step += 1
            grad = _token_gradient(lm, fr, current, target)
            grad[:, ~allowed] = float("inf")
            top = (-grad).topk(budget.top_k, dim=1).indices.cpu().numpy()
            seen, candidates = {tuple(current)}, []
            for _ in range(budget.candidates):
                pos = int(rng.integers(len(current)))
                cand = list(current)
                cand[pos] = int(top[pos, int(rng.integers(budget.top_k))])
                if tuple(cand) not in seen and renders_as(lm.tokenizer, cand, fr):
                    seen.add(tuple(cand))
                    candidates.append(cand)
            if not candidates:
                continue
            losses, hits = evaluate_targets(lm, fr, candidates, target)
            # A candidate that already elicits the target wins; otherwise the lowest loss, even if worse
            # than the current one (as GCG does: it escapes plateaus).
            order = torch.where(hits, losses - 1e6, losses)
            best = int(order.argmin())
            current, loss, hit = candidates[best], float(losses[best]), bool(hits[best])
            log.debug("gcg step %d: loss %.3f%s", step, loss, " (elicits)" if hit else "")
    finally:
        for p in params:
            p.requires_grad_(True)
        lm.model.train(model_was_training)
    return GCGResult(current, loss, step, hit)
