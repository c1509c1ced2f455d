"""``linear``: the weighted average of parameters ("model soups", Wortsman et al., ICML 2022)."""
from __future__ import annotations

from typing import Optional

import torch

from modelprint.merge.blueprint import METHODS, MergeMethod
from modelprint.merge.tensors import clone_with_state, float_state
from modelprint.models import LoadedModel


@METHODS.register("linear",
                  source="Wortsman et al., Model soups: averaging weights of multiple fine-tuned models, ICML 2022")
class LinearMerge(MergeMethod):
    """Weighted parameter average θ = Σ wᵢ θᵢ (Wortsman et al., "Model soups", ICML 2022).

    Weights must be positive and are normalised to sum to 1, so identical parents give the parent back.
    """

    def merge(self, models: list[LoadedModel], weights: list[float], base: Optional[LoadedModel],
              device: torch.device) -> torch.nn.Module:
        states = [float_state(m.model, device) for m in models]
        merged = {k: sum(w * s[k] for w, s in zip(weights, states)) for k in states[0]}
        return clone_with_state(models[0].model, merged)
