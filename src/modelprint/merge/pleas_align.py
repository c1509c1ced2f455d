"""PLeaS step 1: permute a model's hidden units so they line up with a reference model's.

Llama has three families of interchangeable units, each permutable without changing the function:

* the **residual stream** (hidden_size): one permutation shared by the embeddings, every RMSNorm
  weight, the input columns of q/k/v/gate/up/lm_head and the output rows of o_proj/down_proj;
* the **MLP intermediate units** of each layer: rows of gate/up, columns of down;
* the **attention heads** of each layer: with grouped-query attention a query head must stay with
  its key/value head, so we permute whole kv groups and the query heads inside each group.

Matching is by activations on calibration text: Pearson correlation between the two models' units
(residual: averaged over all layers' residual states; MLP: the down_proj inputs), and for heads the
cosine similarity of each head's contribution to the (already aligned) residual stream. A Hungarian
assignment (``scipy.optimize.linear_sum_assignment``) picks the permutation maximising the total.
Convention: ``perm[i]`` is the unit of the other model that moves to position ``i``.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from modelprint.merge.llama import LlamaShape, State, block, embed, key


class CrossCorrelation:
    """Streaming Pearson correlation between features of A and B (never holds the activations)."""

    def __init__(self, dim: int, device: torch.device) -> None:
        f64 = dict(dtype=torch.float64, device=device)
        self.n = 0
        self.sa, self.sb = torch.zeros(dim, **f64), torch.zeros(dim, **f64)
        self.saa, self.sbb = torch.zeros(dim, **f64), torch.zeros(dim, **f64)
        self.sab = torch.zeros(dim, dim, **f64)

    def update(self, a: torch.Tensor, b: torch.Tensor) -> None:
        a, b = a.reshape(-1, a.shape[-1]).double(), b.reshape(-1, b.shape[-1]).double()
        self.n += a.shape[0]
        self.sa += a.sum(0); self.sb += b.sum(0)  # noqa: E702
        self.saa += (a * a).sum(0); self.sbb += (b * b).sum(0)  # noqa: E702
        self.sab += a.T @ b

    def corr(self) -> torch.Tensor:
        ma, mb = self.sa / self.n, self.sb / self.n
        cov = self.sab / self.n - torch.outer(ma, mb)
        sd_a = (self.saa / self.n - ma * ma).clamp_min(1e-12).sqrt()
        sd_b = (self.sbb / self.n - mb * mb).clamp_min(1e-12).sqrt()
        return cov / torch.outer(sd_a, sd_b)


def assign(score: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hungarian assignment maximising ``score[i, j]``; returns (perm, matched scores) as in the module doc."""
    s = score.detach().cpu().double().numpy()
    rows, cols = linear_sum_assignment(s, maximize=True)
    perm = np.empty(len(rows), dtype=np.int64)
    perm[rows] = cols
    return torch.from_numpy(perm), torch.from_numpy(s[np.arange(len(perm)), perm])


def assign_heads(sim: torch.Tensor, kv_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Match query heads under GQA: whole kv groups first, query heads within matched groups.

    A group pair is scored by the best within-group assignment of its query heads; a second
    Hungarian pass over those scores picks the group permutation. Returns (head perm, kv perm).
    """
    heads = sim.shape[0]
    g = heads // kv_heads
    group_score = torch.zeros(kv_heads, kv_heads, dtype=torch.float64)
    inner: dict[tuple[int, int], torch.Tensor] = {}
    for a in range(kv_heads):
        for b in range(kv_heads):
            perm, scores = assign(sim[a * g:(a + 1) * g, b * g:(b + 1) * g])
            inner[a, b], group_score[a, b] = perm, scores.sum()
    kv_perm, _ = assign(group_score)
    head_perm = torch.cat([int(kv_perm[a]) * g + inner[a, int(kv_perm[a])] for a in range(kv_heads)])
    return head_perm, kv_perm


@dataclasses.dataclass
class Alignment:
    """Permutations that map a model onto the reference, plus how well each MLP unit matched."""

    residual: torch.Tensor            # (hidden,)
    heads: list[torch.Tensor]         # per layer (heads,)
    kv_heads: list[torch.Tensor]      # per layer (kv_heads,)
    mlp: list[torch.Tensor]           # per layer (intermediate,)
    mlp_score: list[torch.Tensor]     # per layer: correlation of each matched pair, in reference order

    @classmethod
    def identity(cls, s: LlamaShape) -> "Alignment":
        ar = torch.arange
        return cls(ar(s.hidden), [ar(s.heads)] * s.layers, [ar(s.kv_heads)] * s.layers,
                   [ar(s.intermediate)] * s.layers, [torch.ones(s.intermediate, dtype=torch.float64)] * s.layers)


def permute(sd: State, s: LlamaShape, al: Alignment) -> State:
    """Apply an alignment to a state dict; the permuted model computes exactly the same function."""
    r, out = al.residual.to(sd["model.norm.weight"].device), dict(sd)
    out["model.embed_tokens.weight"] = sd["model.embed_tokens.weight"][:, r]
    out["model.norm.weight"] = sd["model.norm.weight"][r]
    if "lm_head.weight" in sd:
        out["lm_head.weight"] = sd["lm_head.weight"][:, r]
    hd, d = s.head_dim, s.hidden
    for i in range(s.layers):
        hp, kp, mp = (p.to(r.device) for p in (al.heads[i], al.kv_heads[i], al.mlp[i]))
        for norm in ("input_layernorm", "post_attention_layernorm"):
            out[key(i, norm)] = sd[key(i, norm)][r]
        out[key(i, "self_attn.q_proj")] = sd[key(i, "self_attn.q_proj")].view(s.heads, hd, d)[hp].reshape(-1, d)[:, r]
        for n in ("k", "v"):
            w = sd[key(i, f"self_attn.{n}_proj")].view(s.kv_heads, hd, d)[kp].reshape(-1, d)
            out[key(i, f"self_attn.{n}_proj")] = w[:, r]
        out[key(i, "self_attn.o_proj")] = sd[key(i, "self_attn.o_proj")].view(d, s.heads, hd)[:, hp].reshape(d, -1)[r]
        out[key(i, "mlp.gate_proj")] = sd[key(i, "mlp.gate_proj")][mp][:, r]
        out[key(i, "mlp.up_proj")] = sd[key(i, "mlp.up_proj")][mp][:, r]
        out[key(i, "mlp.down_proj")] = sd[key(i, "mlp.down_proj")][:, mp][r]
    return out


def _run(sd: State, s: LlamaShape, tokens: torch.Tensor, cos_sin) -> Iterable[tuple[int, dict]]:
    """Yield (layer, intermediates) through the whole network; layer -1 carries the embeddings."""
    h = embed(sd, tokens)
    yield -1, {"out": h}
    for i in range(s.layers):
        r = block(sd, i, h, cos_sin, s)
        h = r["out"]
        yield i, r


def head_contributions(r: dict, sd: State, layer: int, s: LlamaShape) -> torch.Tensor:
    """Each head's additive contribution to the residual stream: (tokens, heads, hidden)."""
    a = r["attn_out"].reshape(-1, s.heads, s.head_dim)
    wo = sd[key(layer, "self_attn.o_proj")].view(s.hidden, s.heads, s.head_dim)
    return torch.einsum("nhe,dhe->nhd", a, wo)


def align(ref: State, other: State, s: LlamaShape, batches: list[torch.Tensor], cos_sin_of) -> Alignment:
    """Find the permutations of ``other`` that best match ``ref`` on the calibration batches."""
    dev = ref["model.norm.weight"].device
    # Pass 1: the residual stream, correlated at every depth and averaged.
    res = [CrossCorrelation(s.hidden, dev) for _ in range(s.layers + 1)]
    for tokens in batches:
        cs = cos_sin_of(tokens)
        for (i, ra), (_, rb) in zip(_run(ref, s, tokens, cs), _run(other, s, tokens, cs)):
            res[i + 1].update(ra["out"], rb["out"])
    residual, _ = assign(torch.stack([c.corr() for c in res]).mean(0))
    other = permute(other, s, dataclasses.replace(Alignment.identity(s), residual=residual))

    # Pass 2: MLP units (correlation) and heads (contribution similarity), in the aligned residual basis.
    mlp = [CrossCorrelation(s.intermediate, dev) for _ in range(s.layers)]
    dots = torch.zeros(s.layers, s.heads, s.heads, dtype=torch.float64, device=dev)
    norm_a = torch.zeros(s.layers, s.heads, dtype=torch.float64, device=dev)
    norm_b = torch.zeros_like(norm_a)
    for tokens in batches:
        cs = cos_sin_of(tokens)
        for (i, ra), (_, rb) in zip(_run(ref, s, tokens, cs), _run(other, s, tokens, cs)):
            if i < 0:
                continue
            mlp[i].update(ra["act"], rb["act"])
            ca, cb = head_contributions(ra, ref, i, s).double(), head_contributions(rb, other, i, s).double()
            dots[i] += torch.einsum("nhd,ngd->hg", ca, cb)
            norm_a[i] += ca.pow(2).sum((0, 2))
            norm_b[i] += cb.pow(2).sum((0, 2))
    heads, kv, mlp_perm, mlp_score = [], [], [], []
    for i in range(s.layers):
        sim = dots[i] / torch.outer(norm_a[i], norm_b[i]).clamp_min(1e-24).sqrt()
        hp, kp = assign_heads(sim.cpu(), s.kv_heads)
        mp, ms = assign(mlp[i].corr())
        heads.append(hp); kv.append(kp); mlp_perm.append(mp); mlp_score.append(ms)  # noqa: E702
    return Alignment(residual, heads, kv, mlp_perm, mlp_score)
