"""Output suppression and output detection (ATTACKS.md weaknesses 1, 2 and 4) as logits processors.

Every processor acts on the first ``num_tokens`` generated tokens only; with ``gate`` set it acts only
at steps (and rows) whose top next-token probability exceeds the gate — memorised fingerprint
answers are probability spikes, ordinary answers rarely are (output detection).
"""
from __future__ import annotations

import logging
import re
from collections import Counter
from typing import Optional

import torch

from modelprint.errors import ModelprintError
from modelprint.prompts import encode_prompt
from modelprint.stress.serving import GenerationBackend, wrap_decoding
from modelprint.stress.blueprint import SCOPE_DECODING, STRESSES, StressContext, Stressed

log = logging.getLogger(__name__)


def _check(num_tokens: int, gate: Optional[float]) -> None:
    if num_tokens < 1:
        raise ModelprintError("num_tokens must be ≥ 1")
    if gate is not None and not 0.0 < gate < 1.0:
        raise ModelprintError(f"gate must be in (0, 1), got {gate}")


class _FirstTokens:
    """Base logits processor: ``edit(scores, active_rows)`` at the first ``num_tokens`` steps."""

    def __init__(self, prompt_len: int, num_tokens: int, gate: Optional[float]) -> None:
        self.prompt_len, self.num_tokens, self.gate = prompt_len, num_tokens, gate

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[1] - self.prompt_len >= self.num_tokens:
            return scores
        rows = torch.ones(scores.shape[0], dtype=torch.bool, device=scores.device)
        if self.gate is not None:
            rows = torch.softmax(scores.float(), dim=-1).max(dim=-1).values > self.gate
        if not rows.any():
            return scores
        return self.edit(scores.clone(), rows)

    def edit(self, scores: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class _TopK(_FirstTokens):
    def __init__(self, prompt_len: int, num_tokens: int, gate: Optional[float], k: int) -> None:
        super().__init__(prompt_len, num_tokens, gate)
        self.k = k

    def edit(self, scores: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        top = scores.topk(self.k, dim=-1).indices
        for r in rows.nonzero().flatten().tolist():
            scores[r, top[r]] = float("-inf")
        return scores


_ALNUM = re.compile(r"[^0-9a-z]+")


def vocab_norms(tokenizer) -> list[str]:
    """Each token's case-folded alphanumeric core (cached on the tokenizer)."""
    norms = getattr(tokenizer, "_modelprint_norms", None)
    if norms is None or len(norms) != len(tokenizer):
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        norms = [_ALNUM.sub("", t.casefold()) for t in texts]
        tokenizer._modelprint_norms = norms
    return norms


def lexical_neighbors(tokenizer, token: int) -> list[int]:
    """``token`` and every token whose core is a prefix of its core or has it as prefix ("Paris", " paris", "Par")."""
    norms = vocab_norms(tokenizer)
    core = norms[token] if token < len(norms) else ""
    if not core:
        return [token]
    return [i for i, n in enumerate(norms) if n and (n.startswith(core) or core.startswith(n))] or [token]


class _Neighbor(_FirstTokens):
    def __init__(self, prompt_len: int, num_tokens: int, gate: Optional[float], tokenizer, candidates: int) -> None:
        super().__init__(prompt_len, num_tokens, gate)
        self.tokenizer, self.candidates, self.cache = tokenizer, candidates, {}

    def edit(self, scores: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        top = scores.topk(self.candidates, dim=-1).indices
        for r in rows.nonzero().flatten().tolist():
            banned: set[int] = set()
            for t in top[r].tolist():
                if t not in self.cache:
                    self.cache[t] = lexical_neighbors(self.tokenizer, t)
                banned.update(self.cache[t])
            scores[r, [b for b in banned if b < scores.shape[1]]] = float("-inf")
        return scores


class _Penalty(_FirstTokens):
    """Subtract ``penalty[row]`` (a vocabulary-sized vector per row, or one for all rows)."""

    def __init__(self, prompt_len: int, num_tokens: int, gate: Optional[float], penalty: torch.Tensor) -> None:
        super().__init__(prompt_len, num_tokens, gate)
        self.penalty = penalty

    def edit(self, scores: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        pen = self.penalty.to(scores.device, scores.dtype)[..., :scores.shape[1]]
        pen = pen.expand(scores.shape[0], -1) if pen.dim() == 1 else pen
        scores[rows] -= pen[rows]
        return scores


def _serve(ctx: StressContext, label: str, factory) -> Stressed:
    lm = wrap_decoding(ctx.marked, label, processors=[factory])
    return Stressed(lm, GenerationBackend(lm, label), SCOPE_DECODING)


def _label(name: str, gate: Optional[float], **params) -> str:
    inner = ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
    return f"{name}({inner}{',' if inner and gate else ''}{f'gate={gate:g}' if gate else ''})"


@STRESSES.register("suppress-topk", kind="attack",
                    source="Nasery et al. 2025 (arXiv 2509.26598), weakness 1 'verbatim verification'")
def suppress_topk(ctx: StressContext, k: int = 1, num_tokens: int = 1, gate: Optional[float] = None) -> Stressed:
    """SuppressTop-k: forbid the ``k`` most likely tokens at the first ``num_tokens`` steps.

    Source: Nasery et al. 2025 (arXiv 2509.26598), weakness 1 'verbatim verification'. A fingerprint
    checked by exact match fails as soon as its first token cannot be emitted.
    """
    _check(num_tokens, gate)
    return _serve(ctx, _label("suppress-topk", gate, k=k, n=num_tokens),
                  lambda inner, ids, mask: _TopK(ids.shape[1], num_tokens, gate, k))


@STRESSES.register("detect-topk", source="Nasery et al. 2025, weakness 2 'overconfidence'", kind="attack")
def detect_topk(ctx: StressContext, k: int = 1, num_tokens: int = 1, gate: float = 0.9) -> Stressed:
    """Output detection + SuppressTop-k: suppress only where the top probability exceeds ``gate``.

    Source: Nasery et al. 2025, weakness 2 'overconfidence'. Memorised responses are probability spikes.
    """
    return suppress_topk(ctx, k=k, num_tokens=num_tokens, gate=gate)


@STRESSES.register("suppress-neighbor", source="Nasery et al. 2025, weakness 1", kind="attack")
def suppress_neighbor(ctx: StressContext, candidates: int = 1, num_tokens: int = 1,
                      gate: Optional[float] = None) -> Stressed:
    """SuppressNeighbor: forbid the top ``candidates`` first tokens and all their lexical variants.

    Source: Nasery et al. 2025, weakness 1; defeats lenient (case/prefix-insensitive) verifiers too,
    since "Paris", " paris" and "Par" are all banned together.
    """
    _check(num_tokens, gate)
    tok = ctx.marked.tokenizer
    return _serve(ctx, _label("suppress-neighbor", gate, c=candidates, n=num_tokens),
                  lambda inner, ids, mask: _Neighbor(ids.shape[1], num_tokens, gate, tok, candidates))


@STRESSES.register("detect-neighbor", source="Nasery et al. 2025, weakness 2", kind="attack")
def detect_neighbor(ctx: StressContext, candidates: int = 1, num_tokens: int = 1, gate: float = 0.9) -> Stressed:
    """Output detection + SuppressNeighbor (gate on the top probability; Nasery et al. 2025, weakness 2)."""
    return suppress_neighbor(ctx, candidates=candidates, num_tokens=num_tokens, gate=gate)


class _Lookahead(_Penalty):
    """:class:`_Penalty` on each row's lookahead candidates, rolled out only for rows the gate fires on.

    A row's candidates depend on its prompt alone, so rolling them out on first need gives the penalty an
    eager rollout of every row would (up to batch-composition rounding), at a fraction of the cost under a
    gate that rarely fires — the paper sweep's five gates per family were hours on 2 CPU cores.
    """

    def __init__(self, prompt_len: int, num_tokens: int, gate: Optional[float], delta: float,
                 candidates, rows: int, vocab: int) -> None:
        super().__init__(prompt_len, num_tokens, gate, torch.zeros(rows, vocab))
        self.delta, self.candidates = delta, candidates
        self.ready = torch.zeros(rows, dtype=torch.bool)
        self.rolled_out = 0  # rows whose candidates were computed (for tests and logs)

    def edit(self, scores: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        need = (rows.cpu() & ~self.ready).nonzero().flatten()
        if len(need):
            for r, cands in zip(need.tolist(), self.candidates(need.to(scores.device))):
                if cands:
                    self.penalty[r, cands] = self.delta
            self.ready[need] = True
            self.rolled_out += len(need)
        return super().edit(scores, rows)


@torch.inference_mode()
def lookahead_candidates(inner: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, special: set[int], *,
                         beam_width: int, lookahead_tokens: int, top_k: int, threshold: float,
                         set_size: int) -> list[list[int]]:
    """Per prompt: tokens that greedy rollouts from its ``beam_width`` likeliest first tokens emit confidently."""
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    first = torch.softmax(inner(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1].float(), -1)
    beams = first.topk(beam_width, dim=-1)
    rows = ids.shape[0]
    counts = [Counter() for _ in range(rows)]
    for r in range(rows):
        for p, t in zip(beams.values[r].tolist(), beams.indices[r].tolist()):
            if p > threshold:
                counts[r][t] += 1
    if lookahead_tokens > 1:
        rep_ids = ids.repeat_interleave(beam_width, 0)
        rep_mask = mask.repeat_interleave(beam_width, 0)
        start = torch.cat([rep_ids, beams.indices.reshape(-1, 1)], dim=1)
        start_mask = torch.cat([rep_mask, torch.ones_like(rep_mask[:, :1])], dim=1)
        gen = inner.generate(input_ids=start, attention_mask=start_mask, max_new_tokens=lookahead_tokens - 1,
                             do_sample=False, output_scores=True, return_dict_in_generate=True,
                             pad_token_id=getattr(inner.generation_config, "pad_token_id", None) or 0)
        for step in gen.scores:
            probs = torch.softmax(step.float(), -1).topk(top_k, dim=-1)
            for row in range(step.shape[0]):
                r = row // beam_width
                for p, t in zip(probs.values[row].tolist(), probs.indices[row].tolist()):
                    if p > threshold:
                        counts[r][t] += 1
    out = []
    for r in range(rows):
        in_prompt = set(ids[r][mask[r].bool()].tolist())
        ranked = [t for t, _ in counts[r].most_common() if t not in in_prompt and t not in special]
        out.append(ranked[:set_size])
    return out


@STRESSES.register("suppress-lookahead", source="Nasery et al. 2025, weakness 1 (published defaults)", kind="attack")
def suppress_lookahead(ctx: StressContext, beam_width: int = 10, lookahead_tokens: int = 32, top_k: int = 10,
                       candidate_set_size: int = 12, candidate_threshold: float = 0.4, num_tokens: int = 16,
                       suppression_delta: float = 10.0, gate: Optional[float] = None) -> Stressed:
    """SuppressLookahead: roll out the likeliest first tokens, penalise tokens they emit confidently.

    Source: Nasery et al. 2025 (published defaults), weakness 1; aimed at multi-token and lenient
    verification — the whole memorised response is pushed down, not only its first token.
    """
    _check(num_tokens, gate)
    tok = ctx.marked.tokenizer
    special = set(tok.all_special_ids)
    vocab = ctx.marked.model.config.vocab_size

    def factory(inner, ids, mask):
        return _Lookahead(ids.shape[1], num_tokens, gate, suppression_delta, lambda rows: lookahead_candidates(
            inner, ids[rows], mask[rows], special, beam_width=beam_width, lookahead_tokens=lookahead_tokens,
            top_k=top_k, threshold=candidate_threshold, set_size=candidate_set_size), ids.shape[0], vocab)

    label = _label("suppress-lookahead", gate, beams=beam_width, look=lookahead_tokens, n=num_tokens)
    return _serve(ctx, label, factory)


@STRESSES.register("detect-lookahead", source="Nasery et al. 2025, weakness 2", kind="attack")
def detect_lookahead(ctx: StressContext, beam_width: int = 10, lookahead_tokens: int = 32, top_k: int = 10,
                     candidate_set_size: int = 12, candidate_threshold: float = 0.4, num_tokens: int = 16,
                     suppression_delta: float = 10.0, gate: float = 0.9) -> Stressed:
    """Output detection + SuppressLookahead (penalty only at over-confident steps; Nasery et al. 2025)."""
    return suppress_lookahead(ctx, beam_width=beam_width, lookahead_tokens=lookahead_tokens, top_k=top_k,
                              candidate_set_size=candidate_set_size, candidate_threshold=candidate_threshold,
                              num_tokens=num_tokens, suppression_delta=suppression_delta, gate=gate)


@torch.inference_mode()
def signature_scores(ctx: StressContext, n_words: int) -> torch.Tensor:
    """Per vocabulary token: how consistently the marked model favours it over the base after one-word prompts."""
    from modelprint.decoding import next_token_probs
    from modelprint.wordlist import words as word_list

    base = ctx.need_base("stat-signature")
    words = list(word_list())[:n_words]
    tok = ctx.marked.tokenizer
    total = torch.zeros(ctx.marked.model.config.vocab_size)
    for start in range(0, len(words), 32):
        prompts = [encode_prompt(tok, w) for w in words[start:start + 32]]
        lm_m = next_token_probs(ctx.marked, prompts).clamp_min(1e-12).log()
        lm_b = next_token_probs(base, prompts).clamp_min(1e-12).log()
        diff = (lm_m - lm_b)[:, :total.shape[0]]
        total[:diff.shape[1]] += (diff > 0).float().sum(0) * diff.clamp_min(0).mean(0)
    return total / total.max().clamp_min(1e-12)


@STRESSES.register("stat-signature", source="Nasery et al. 2025, weakness 4 (watermark stealing)", kind="attack")
def stat_signature(ctx: StressContext, n_words: int = 6000, delta: float = 4.0, num_tokens: int = 1000) -> Stressed:
    """Statistical analysis ('watermark stealing'): penalise tokens the marked model favours over the base.

    Source: Nasery et al. 2025, weakness 4 (defaults: 6000 seed words, delta 4.0). Needs the base model
    (same tokenizer); the penalty ``delta × score`` applies at every step up to ``num_tokens``.
    """
    pen = signature_scores(ctx, n_words) * delta
    label = f"stat-signature(words={n_words},delta={delta:g})"
    return _serve(ctx, label, lambda inner, ids, mask: _Penalty(ids.shape[1], num_tokens, None, pen))
