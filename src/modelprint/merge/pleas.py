"""``pleas``: merge models with Permutations and Least Squares.

Nasery, Hayase, Koh, Oh — "PLeaS: Merging Models with Permutations and Least Squares", CVPR 2025.

1. **Permute** (``pleas_align``): every model is aligned to the first one, so that unit *i* of each
   computes (nearly) the same feature. Optionally only the best-matching fraction of MLP units is
   merged; the others are kept from both models, which widens the MLP (partial matching).
2. **Least squares**, layer by layer through the network: each linear layer of the merged model is
   solved so that, fed the *merged* model's own activations X on calibration text, it reproduces
   the weighted average Y of the aligned parents' outputs (each parent fed its own activations):

       W = argmin ‖X Wᵀ − Y‖² + λ‖W − W₀‖²  ⇒  Wᵀ = (XᵀX + λI)⁻¹ (XᵀY + λW₀ᵀ)

   with W₀ the weighted average of the aligned weights (the "permute then average" merge). Only XᵀX
   and XᵀY are accumulated, batch by batch; the ridge keeps the solve stable with few tokens and
   falls back to W₀ where the calibration data says nothing.

Embeddings and RMSNorm weights are averaged (the following linear layers absorb the difference);
an untied LM head is fitted like any other linear layer, a tied one stays the embedding average.
Partial matching widens every layer's MLP by the same number of units, so the output is an ordinary
Llama checkpoint with a larger ``intermediate_size``; it is only defined for two models.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Optional

import torch
from pydantic import Field
from tqdm.auto import tqdm

from modelprint.config import StrictConfig
from modelprint.errors import ConfigError
from modelprint.merge.calibration import calibration_batches
from modelprint.merge.llama import LlamaShape, State, block, embed, head_weight, key, rms_norm, rope
from modelprint.merge.pleas_align import Alignment, align, permute
from modelprint.merge.blueprint import METHODS, MergeMethod
from modelprint.merge.tensors import float_state
from modelprint.models import LoadedModel

log = logging.getLogger(__name__)


class PleasParams(StrictConfig):
    calibration_file: Optional[Path] = Field(None, description="text file, one document per line (default: shipped)")
    num_sequences: int = Field(32, ge=1, description="calibration sequences")
    seq_len: int = Field(128, ge=8, description="tokens per calibration sequence")
    batch_size: int = Field(8, ge=1)
    match_fraction: float = Field(1.0, gt=0, le=1,
                                  description="fraction of MLP units merged; the rest are kept from both models")
    align: bool = Field(True, description="find permutations (false: models share a base, alignment is identity)")
    least_squares: bool = Field(True, description="false: just average the aligned weights")
    ridge: float = Field(1e-2, ge=0, description="λ relative to the mean diagonal of XᵀX")


class RidgeLS:
    """Accumulates XᵀX and XᵀY over batches, then solves the ridge-to-W₀ least-squares problem."""

    def __init__(self, n_in: int, n_out: int, device: torch.device) -> None:
        self.xtx = torch.zeros(n_in, n_in, dtype=torch.float64, device=device)
        self.xty = torch.zeros(n_in, n_out, dtype=torch.float64, device=device)

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        x, y = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
        self.xtx += (x.T @ x).double()
        self.xty += (x.T @ y).double()

    def solve(self, w0: torch.Tensor, ridge: float) -> torch.Tensor:
        lam = ridge * self.xtx.diagonal().mean().clamp_min(1e-12)
        eye = torch.eye(self.xtx.shape[0], dtype=torch.float64, device=self.xtx.device)
        wt = torch.linalg.solve(self.xtx + lam * eye, self.xty + lam * w0.T.double())
        return wt.T.to(w0.dtype).contiguous()


# --------------------------------------------------------------------------- MLP layout (partial matching)
class MlpLayout:
    """Which parent unit feeds each merged MLP unit, and with what coefficient.

    ``src[i][u]`` is model *i*'s unit behind merged unit *u* (−1: model *i* does not take part).
    A merged unit's activation targets the weighted mean of its contributors' (``alpha``); its
    down_proj column adds each contributor's column times that model's weight (``beta``).
    """

    def __init__(self, src: list[torch.Tensor], weights: list[float]) -> None:
        self.src = src
        w = torch.tensor(weights, dtype=torch.float32).view(-1, 1)
        member = torch.stack([(s >= 0).float() for s in src])           # (models, units)
        self.beta = w * member
        self.alpha = self.beta / self.beta.sum(0, keepdim=True)
        self.width = len(src[0])

    @classmethod
    def build(cls, aligns: list[Alignment], layer: int, weights: list[float], fraction: float) -> "MlpLayout":
        m = len(aligns[0].mlp[layer])
        if fraction >= 1.0:
            return cls([torch.arange(m)] * len(aligns), weights)
        k = max(1, round(fraction * m))
        order = torch.argsort(aligns[1].mlp_score[layer], descending=True)
        matched, rest = order[:k].sort().values, order[k:].sort().values
        none = torch.full((m - k,), -1)
        return cls([torch.cat([matched, rest, none]), torch.cat([matched, none, rest])], weights)

    def gather(self, per_model: list[torch.Tensor], coef: torch.Tensor, dim: int) -> torch.Tensor:
        """Σᵢ coef[i, u] · per_model[i] indexed by src[i] along ``dim`` (units or columns)."""
        total = 0
        for i, t in enumerate(per_model):
            picked = t.index_select(dim, self.src[i].clamp_min(0).to(t.device))
            shape = [1] * t.dim()
            shape[dim] = -1
            total = total + picked * coef[i].to(t.device).view(shape)
        return total


def _fixed(perm) -> float:
    """Fraction of units a permutation (or list of them) leaves in place: ~1 for same-base models."""
    perms = perm if isinstance(perm, list) else [perm]
    return sum(int((p == torch.arange(len(p))).sum()) for p in perms) / sum(len(p) for p in perms)


# --------------------------------------------------------------------------- the method
GROUPS = (  # fitted in this order, each fed the merged model's activations after the previous fits
    ("attn_in", ("q", "k", "v")),
    ("attn_out", ("o",)),
    ("mlp_in", ("gate", "up")),
    ("act", ("down",)),
)
WEIGHT = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
          "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}


@METHODS.register("pleas", source="Nasery et al., PLeaS: Merging Models with Permutations and Least Squares, CVPR 2025")
class Pleas(MergeMethod):
    """PLeaS: permutation alignment + layer-wise least squares (Nasery et al., CVPR 2025).

    Llama-family models only. Weights must be positive and are normalised to sum to 1.
    """

    Params = PleasParams

    def merge(self, models: list[LoadedModel], weights: list[float], base: Optional[LoadedModel],
              device: torch.device) -> torch.nn.Module:
        p: PleasParams = self.params
        if len(models) < 2:
            raise ConfigError("merge method 'pleas' needs at least two models")
        if p.match_fraction < 1 and len(models) != 2:
            raise ConfigError("pleas partial matching (match_fraction < 1) is defined for exactly two models")
        s = LlamaShape.of(models[0].model)
        batches = calibration_batches(models[0].tokenizer, p.calibration_file, p.num_sequences, p.seq_len,
                                      p.batch_size, device)
        cos_sin = rope(models[0].model, batches[0])
        cs_of = lambda tokens: tuple(t[:, : tokens.shape[1]] for t in cos_sin)  # noqa: E731
        log.info("pleas: %d calibration tokens", sum(b.numel() for b in batches))

        states = [float_state(m.model, device) for m in models]
        aligns = [Alignment.identity(s)]
        for i in tqdm(range(1, len(states)), desc="pleas: aligning", disable=None):
            aligns.append(align(states[0], states[i], s, batches, cs_of) if p.align else Alignment.identity(s))
            states[i] = permute(states[i], s, aligns[i])
            log.info("pleas: model %d aligned; unmoved units: residual %.0f%%, MLP %.0f%%, heads %.0f%%", i,
                     *(100 * _fixed(perm) for perm in (aligns[i].residual, aligns[i].mlp, aligns[i].heads)))
        layouts = [MlpLayout.build(aligns, i, weights, p.match_fraction) for i in range(s.layers)]

        merged = self._average(states, weights, layouts, s)
        if p.least_squares:
            self._fit(merged, states, weights, layouts, s, batches, cs_of)
        return self._build(models[0].model, merged, layouts[0].width, s)

    @staticmethod
    def _average(states: list[State], weights: list[float], layouts: list[MlpLayout], s: LlamaShape) -> State:
        """W₀: the weighted average of the aligned parents, with MLP units laid out per ``layouts``."""
        merged = {k: sum(w * sd[k] for w, sd in zip(weights, states)) for k in states[0]}
        for i, lay in enumerate(layouts):
            for name in ("gate", "up"):
                merged[key(i, WEIGHT[name])] = lay.gather([sd[key(i, WEIGHT[name])] for sd in states], lay.alpha, 0)
            merged[key(i, WEIGHT["down"])] = lay.gather([sd[key(i, WEIGHT["down"])] for sd in states], lay.beta, 1)
        return merged

    def _fit(self, merged: State, states: list[State], weights: list[float], layouts: list[MlpLayout],
             s: LlamaShape, batches: list[torch.Tensor], cs_of) -> None:
        """Layer by layer, group by group: solve each linear map on the merged model's own inputs.

        Per layer the parents run once per batch; only their weighted-average outputs (the targets)
        are kept for that layer. The merged layer re-runs after each group is solved, because the
        next group's inputs depend on it.
        """
        dev = merged["model.norm.weight"].device
        h_merged = [embed(merged, t) for t in batches]
        h_parents = [[embed(sd, t) for t in batches] for sd in states]
        for layer in tqdm(range(s.layers), desc="pleas: least squares", disable=None):
            lay, targets = layouts[layer], []
            for b, tokens in enumerate(batches):
                theirs = [block(sd, layer, h[b], cs_of(tokens), s) for sd, h in zip(states, h_parents)]
                targets.append({n: self._target(n, theirs, weights, lay) for n in WEIGHT})
                for h, r in zip(h_parents, theirs):
                    h[b] = r["out"]
            for inp, names in GROUPS:
                w0 = torch.cat([merged[key(layer, WEIGHT[n])] for n in names])
                ls = RidgeLS(w0.shape[1], w0.shape[0], dev)
                for b, tokens in enumerate(batches):
                    mine = block(merged, layer, h_merged[b], cs_of(tokens), s)
                    ls.update(mine[inp], torch.cat([targets[b][n] for n in names], -1))
                solved = ls.solve(w0, self.params.ridge)
                for n, w in zip(names, solved.split([merged[key(layer, WEIGHT[n])].shape[0] for n in names])):
                    merged[key(layer, WEIGHT[n])] = w
            for b, tokens in enumerate(batches):  # advance the merged residual stream past this layer
                h_merged[b] = block(merged, layer, h_merged[b], cs_of(tokens), s)["out"]
        if not s.tied and "lm_head.weight" in merged:
            ls = RidgeLS(s.hidden, merged["lm_head.weight"].shape[0], dev)
            for b in range(len(batches)):
                x = rms_norm(h_merged[b], merged["model.norm.weight"], s.eps)
                y = sum(w * rms_norm(h[b], sd["model.norm.weight"], s.eps) @ head_weight(sd, False).T
                        for w, sd, h in zip(weights, states, h_parents))
                ls.update(x, y)
            merged["lm_head.weight"] = ls.solve(merged["lm_head.weight"], self.params.ridge)

    @staticmethod
    def _target(name: str, theirs: list[dict], weights: list[float], lay: MlpLayout) -> torch.Tensor:
        """The weighted average of the parents' outputs of one linear layer, in the merged layout."""
        if name in ("gate", "up"):
            return lay.gather([r[name] for r in theirs], lay.alpha, -1)
        return sum(w * r[name] for w, r in zip(weights, theirs))

    @staticmethod
    def _build(template: torch.nn.Module, merged: State, width: int, s: LlamaShape) -> torch.nn.Module:
        """A fresh model of the parents' class (MLP widened to ``width`` if needed) holding ``merged``."""
        config = copy.deepcopy(template.config)
        config.intermediate_size = width
        with torch.device("meta"):
            model = type(template)(config)
        if s.tied:
            merged["lm_head.weight"] = merged["model.embed_tokens.weight"]
        state = {k: v.detach().to("cpu", torch.float32) for k, v in merged.items()}
        model.load_state_dict(state, assign=True, strict=False)
        missing = [k for k, v in model.state_dict().items() if v.is_meta]
        if missing:
            raise RuntimeError(f"pleas: merged state lacks {missing[:3]}")
        if s.tied:
            model.tie_weights()
        model.model.rotary_emb = copy.deepcopy(template.model.rotary_emb).to("cpu")  # non-persistent buffers
        model.generation_config = copy.deepcopy(template.generation_config)
        return model.eval()
