"""Task-vector merges: task arithmetic and TIES as one parameterised mechanism.

A task vector is τᵢ = θᵢ − θ_base. Every variant computes θ = θ_base + λ·combine(wᵢ τᵢ);
``combine`` optionally (1) sparsifies each τᵢ to its top-``density`` entries by magnitude,
(2) elects a sign per entry and drops disagreeing contributions, and (3) divides by the
weight of the models that survived at that entry. Task arithmetic is (no, no, no); TIES is
(yes, yes, yes). This mirrors mergekit's generalised task-arithmetic class.
"""
from __future__ import annotations

from typing import Literal, Optional, Sequence

import torch
from pydantic import Field

from modelprint.config import StrictConfig
from modelprint.errors import ConfigError
from modelprint.merge.blueprint import METHODS, MergeMethod
from modelprint.merge.tensors import clone_with_state, float_state
from modelprint.models import LoadedModel
from modelprint.sparsity import largest_magnitude_mask


class TaskVectorParams(StrictConfig):
    density: float = Field(1.0, gt=0, le=1, description="fraction of each task vector kept, by magnitude")
    consensus: Literal["none", "sign"] = Field("none", description="'sign': TIES sign election + disjoint merge")
    normalize: bool = Field(False, description="divide by the total weight of the models kept at each entry")
    scale: float = Field(1.0, description="λ, multiplies the combined task vector")


class TiesParams(TaskVectorParams):
    density: float = Field(0.2, gt=0, le=1)
    consensus: Literal["none", "sign"] = "sign"
    normalize: bool = True


def sparsify(tau: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ``density`` fraction of entries with the largest magnitude (TIES "trim"), zero the rest."""
    if density >= 1.0:
        return tau
    return torch.where(largest_magnitude_mask(tau, density), tau, torch.zeros_like(tau))


def combine(taus: Sequence[torch.Tensor], weights: Sequence[float], p: TaskVectorParams) -> torch.Tensor:
    """Combine task vectors of one tensor according to ``p`` (see module docstring)."""
    taus = [sparsify(t, p.density) for t in taus]
    weighted = torch.stack([w * t for w, t in zip(weights, taus)])
    w = torch.tensor(weights, dtype=weighted.dtype, device=weighted.device).view(-1, *[1] * taus[0].dim())
    kept = torch.stack([t != 0 for t in taus]).to(weighted.dtype)
    if p.consensus == "sign":
        elected = torch.sign(weighted.sum(0))  # sign of the total (weighted) mass per entry
        kept = kept * (torch.sign(weighted) == elected).to(weighted.dtype)
    total = (weighted * kept).sum(0)
    if p.normalize:
        divisor = (w * kept).sum(0)
        total = total / torch.where(divisor == 0, torch.ones_like(divisor), divisor)
    return p.scale * total


class TaskVectorMerge(MergeMethod):
    """Base of task-vector methods (Ilharco et al., "Editing models with task arithmetic", ICLR 2023)."""

    needs_base = True
    Params = TaskVectorParams

    def check_weights(self, weights: Sequence[float]) -> list[float]:
        if self.params.normalize and any(not w > 0 for w in weights):
            raise ConfigError(f"merge method '{self.name}' with normalize=true needs every model weight > 0 "
                              f"(got {list(weights)})")
        if any(w == 0 for w in weights):
            raise ConfigError(f"merge method '{self.name}': a model weight of 0 is pointless (got {list(weights)})")
        return [float(w) for w in weights]  # task vectors are scaled, not averaged: no normalisation

    def merge(self, models: list[LoadedModel], weights: list[float], base: Optional[LoadedModel],
              device: torch.device) -> torch.nn.Module:
        assert base is not None
        theta0 = float_state(base.model, device)
        states = [float_state(m.model, device) for m in models]
        merged = {k: v + combine([s[k] - v for s in states], weights, self.params) for k, v in theta0.items()}
        return clone_with_state(base.model, merged)


@METHODS.register("task_arithmetic", source="Ilharco et al., Editing models with task arithmetic, ICLR 2023")
class TaskArithmetic(TaskVectorMerge):
    """θ = θ_base + λ Σ wᵢ (θᵢ − θ_base) (Ilharco et al., "Editing models with task arithmetic", ICLR 2023).

    Weights are used as given (any non-zero real; negative weights subtract a task).
    """


@METHODS.register("ties", source="Yadav et al., TIES-Merging: Resolving interference when merging models, NeurIPS 2023")
class Ties(TaskVectorMerge):
    """TIES-Merging: trim, elect sign, disjoint merge (Yadav et al., "TIES-Merging", NeurIPS 2023).

    Defaults: density 0.2, sign consensus, per-entry normalisation by the kept models' weights.
    """

    Params = TiesParams
