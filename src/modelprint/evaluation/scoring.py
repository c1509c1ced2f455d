"""Batched model primitives every task is built from: log-likelihood of continuations and greedy answers.

Tasks only assemble token ids; these two functions own batching, padding and
devices, so a task is a few lines of data handling and runs alike on CPU and GPU.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Optional, Sequence

import torch
from tqdm.auto import tqdm

from modelprint.decoding import continue_greedy, model_stop_ids
from modelprint.models import LoadedModel, is_out_of_memory
from modelprint.prefix_cache import prefill, with_cache

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LogLikelihood:
    """Summed log-probability of a continuation, its token count and whether it is the greedy one."""

    logprob: float
    n_tokens: int
    is_greedy: bool


def _max_length(model: LoadedModel) -> int:
    cfg = getattr(model.model, "config", None)
    return int(getattr(cfg, "max_position_embeddings", 0) or 2048)


def _token_batches(lengths: Sequence[int], order: Sequence[int], batch_size: int, max_batch_tokens: int) -> list[list[int]]:
    """Split ``order`` (longest first) into batches bounded by count and padded token budget."""
    batches: list[list[int]] = []
    current: list[int] = []
    width = 0
    for i in order:
        new_width = max(width, lengths[i])
        if current and (len(current) >= batch_size or new_width * (len(current) + 1) > max_batch_tokens):
            batches.append(current)
            current, new_width = [], lengths[i]
        current.append(i)
        width = new_width
    if current:
        batches.append(current)
    return batches


def progress_bar(total: int, desc: str, progress: Optional[bool]):
    """tqdm bar; ``progress=None`` shows it only on a terminal."""
    return tqdm(total=total, desc=desc, unit="item", leave=False, disable=None if progress is None else not progress)


@torch.inference_mode()
def loglikelihoods(model: LoadedModel, requests: Sequence[tuple[Sequence[int], Sequence[int]]], *,
                   batch_size: int = 16, max_batch_tokens: int = 2048, progress: Optional[bool] = None,
                   desc: str = "scoring") -> list[LogLikelihood]:
    """Log-likelihood of each ``(context_ids, continuation_ids)`` pair, batched longest-first.

    Sequences are right-padded (positions stay those of an unpadded run) and
    truncated from the left to the model's context length, keeping the continuation.
    """
    limit = _max_length(model) + 1
    seqs: list[list[int]] = []
    for ctx, cont in requests:
        if not cont:
            raise ValueError("continuation must contain at least one token")
        if not ctx:
            raise ValueError("context must contain at least one token (use a BOS/EOS prefix)")
        seqs.append((list(ctx) + list(cont))[-limit:])
    lengths = [len(s) - 1 for s in seqs]
    order = sorted(range(len(seqs)), key=lambda i: -lengths[i])
    pad_id = model.tokenizer.pad_token_id or 0
    out: list[Optional[LogLikelihood]] = [None] * len(seqs)
    with progress_bar(len(seqs), desc, progress) as bar:
        for batch in _token_batches(lengths, order, batch_size, max_batch_tokens):
            width = max(lengths[i] for i in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                ids[row, : lengths[i]] = torch.tensor(seqs[i][:-1])
                mask[row, : lengths[i]] = 1
            logits = model.model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits
            for row, i in enumerate(batch):
                n_cont = min(len(requests[i][1]), lengths[i])
                span = logits[row, lengths[i] - n_cont: lengths[i]].float().log_softmax(-1)
                target = torch.tensor(seqs[i][-n_cont:], device=span.device)
                lp = span.gather(-1, target[:, None]).squeeze(-1)
                greedy = bool((span.argmax(-1) == target).all())
                out[i] = LogLikelihood(float(lp.sum()), n_cont, greedy)
            bar.update(len(batch))
    return [o for o in out if o is not None]


@torch.inference_mode()
def greedy_generate(model: LoadedModel, prompts: Sequence[Sequence[int]], *, max_new_tokens: int,
                    batch_size: int = 16, progress: Optional[bool] = None, desc: str = "generating") -> list[list[int]]:
    """Greedy continuation ids of each prompt, cut before the first end-of-sequence token.

    Prompts are batched longest-first with left padding; the same prompts in the
    same order always form the same batches, so two models compare like with like. Decoding is
    :func:`modelprint.decoding.continue_greedy` with the evaluation stop rule (any EOS of the model).
    """
    stop = model_stop_ids(model)
    if model.tokenizer.pad_token_id is not None:
        stop.add(model.tokenizer.pad_token_id)  # an answer also ends at a pad token (the decoder drops the rest)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    with progress_bar(len(prompts), desc, progress) as bar:
        for start in range(0, len(order), batch_size):
            batch = order[start: start + batch_size]
            answers = continue_greedy(model, [prompts[i] for i in batch], max_new_tokens, stop_ids=stop,
                                      model_defaults=False)
            for i, answer in zip(batch, answers):
                out[i] = answer
            bar.update(len(batch))
    return out


@torch.inference_mode()
def choice_loglikelihoods(model: LoadedModel, items: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]], *,
                          progress: Optional[bool] = None, desc: str = "scoring") -> list[list[LogLikelihood]]:
    """Log-likelihoods of several continuations of one shared context per item.

    The context runs once and its KV cache is repeated for the options, so a
    4-option question costs one context pass instead of four (MMLU contexts are
    long). The cache is built explicitly (``modelprint.prefix_cache``), never
    taken from a forward pass's output. Falls back to :func:`loglikelihoods`
    for models whose cache cannot be built or repeated (a quantized or foreign
    architecture); results equal that function's up to float rounding.
    """
    out: list[list[LogLikelihood]] = []
    fallback_logged = False
    with progress_bar(len(items), desc, progress) as bar:
        for ctx, conts in items:
            if not conts or any(not c for c in conts):
                raise ValueError("every item needs at least one non-empty continuation")
            try:
                out.append(_shared_context(model, list(ctx), [list(c) for c in conts]))
            except (AttributeError, NotImplementedError, TypeError, ValueError, RuntimeError) as exc:
                if is_out_of_memory(exc):
                    raise
                if not fallback_logged:
                    log.debug("shared-context scoring failed (%s); scoring options one by one", type(exc).__name__)
                    fallback_logged = True
                out.append(loglikelihoods(model, [(ctx, c) for c in conts], progress=False))
            bar.update(1)
    return out


def _shared_context(model: LoadedModel, ctx: list[int], conts: list[list[int]]) -> list[LogLikelihood]:
    width = max(len(c) for c in conts)
    ctx = ctx[-max(1, _max_length(model) - width):]
    dev = model.device
    cache, last = prefill(model.model, ctx, len(conts), dev)
    pad_id = model.tokenizer.pad_token_id or 0
    ids = torch.full((len(conts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(conts), len(ctx) + width), dtype=torch.long)
    mask[:, : len(ctx)] = 1
    for row, c in enumerate(conts):
        ids[row, : len(c)] = torch.tensor(c)
        mask[row, len(ctx): len(ctx) + len(c)] = 1
    logits = model.model(input_ids=ids.to(dev), attention_mask=mask.to(dev), **with_cache(cache)).logits
    head = last[None].float()
    results = []
    for row, c in enumerate(conts):
        span = torch.cat([head, logits[row, : len(c) - 1].float()]).log_softmax(-1)
        target = torch.tensor(c, device=span.device)
        lp = span.gather(-1, target[:, None]).squeeze(-1)
        results.append(LogLikelihood(float(lp.sum()), len(c), bool((span.argmax(-1) == target).all())))
    return results
