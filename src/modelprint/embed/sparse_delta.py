"""Confine the weight change to a sparse support, so that merges which trim task vectors keep all of it.

TIES-style merging keeps only the ``density`` share of each task vector's entries with the largest magnitude. Adam
moves every trained entry by about the same step, so a fingerprint trained the usual way is spread thinly over all of
them and a trim to 20 % removes most of it. Measured on SmolLM2-135M (margin-4 band model, 64 keys, candidate
ranking): TIES with the base alone keeps 64/64, the marked model plus a host's fine-tune (trimmed) keeps 63/64, but
the trimmed fingerprint plus that fine-tune keeps 36/64 — the trim weakened every lead and the host's change finished
them. A change that lives on a ``density`` share of each tensor from the first step is untouched by any trim at that
density or above: TIES then reduces to "our model plus the host's trimmed fine-tune".

The support is chosen once, from the first step's gradient (per tensor, the entries with the largest magnitude): the
entries the fingerprints need most (a resumed run keeps the entries it has already changed). Gradients outside it
are zeroed before every step (so clipping and Adam's moments see only the support), and after every step the entries
outside it are put back to the base weights (so no optimizer side effect, e.g. weight decay, can leak outside it).
"""
from __future__ import annotations

from typing import Optional

import torch

from modelprint.sparsity import largest_magnitude_mask


def _plain(name: str) -> str:
    return name.removeprefix("module.")  # DDP wraps the model in .module


class SparseDelta:
    """The support of the weight change: ``density`` of each trained tensor's entries, picked by gradient size."""

    def __init__(self, density: float, base_state: dict[str, torch.Tensor]) -> None:
        self.density = density
        self.base_state = base_state
        self.masks: Optional[dict[str, torch.Tensor]] = None

    def _select(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        masks = {}
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            base = self.base_state[_plain(name)].to(p.device, p.dtype)
            changed = (p.detach() != base).flatten()
            mask = torch.zeros(p.numel(), dtype=torch.bool, device=p.device)
            if changed.any():  # a resumed run: its support is what it has already changed
                mask = changed
            elif p.grad is not None:  # the trim's own rule, applied to the gradient
                mask = largest_magnitude_mask(p.grad, self.density).flatten()
            masks[_plain(name)] = mask.view_as(p)
        return masks

    def restrict(self, model: torch.nn.Module) -> None:
        """Zero the gradient outside the support (choosing the support on the first call). Call after backward."""
        if self.masks is None:
            self.masks = self._select(model)
        for name, p in model.named_parameters():
            mask = self.masks.get(_plain(name))
            if mask is not None and p.grad is not None:
                p.grad.mul_(mask)

    @torch.no_grad()
    def project(self, model: torch.nn.Module) -> None:
        """Put every entry outside the support back to the base weight. Call after the optimizer step."""
        if self.masks is None:
            return
        for name, p in model.named_parameters():
            mask = self.masks.get(_plain(name))
            if mask is not None:
                base = self.base_state[_plain(name)].to(p.device, p.dtype)
                p.copy_(torch.where(mask, p, base))

    def share_changed(self, model: torch.nn.Module) -> float:
        """Share of the trained entries that differ from the base (≤ ``density``; a check, and a log line)."""
        changed = total = 0
        for name, p in model.named_parameters():
            base = self.base_state.get(_plain(name))
            if base is not None and p.requires_grad:
                changed += int((p.detach().cpu() != base.to(p.dtype)).sum())
                total += p.numel()
        return changed / total if total else 0.0
