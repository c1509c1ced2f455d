"""The TIES "trim" rule, shared by the merge that applies it and the embed recipe that must survive it.

Both sides have to pick the same entries — a fingerprint confined to what a trim keeps is only safe if it is chosen
by the trim's own rule — so there is one implementation.
"""
from __future__ import annotations

import math

import torch


def largest_magnitude_mask(values: torch.Tensor, density: float) -> torch.Tensor:
    """Boolean mask (shape of ``values``): the ``density`` share of entries with the largest magnitude (≥ 1)."""
    flat = values.detach().flatten()
    if density >= 1.0:
        return torch.ones_like(values, dtype=torch.bool)
    k = max(1, math.ceil(density * flat.numel()))
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[flat.abs().float().topk(k, sorted=False).indices] = True
    return mask.view_as(values)
