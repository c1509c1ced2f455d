"""MLP expansion: extra feed-forward units, added before training, that leave the model's function unchanged.

Fingerprints need somewhere to live. Writing them into the existing weights moves what the model already
does; widening every gated MLP (``gate_proj``/``up_proj``/``down_proj``, as in Llama, Gemma, Qwen, SmolLM)
gives the recipe fresh capacity instead. Each new unit gets small random ``gate``/``up`` rows (so
gradients reach it) and a **zero** ``down`` column (so it adds nothing until trained): at initialisation
the widened model computes exactly what the base computes.

Hugging Face configs hold one ``intermediate_size`` for all blocks, so every block is widened by the same
amount; only the blocks that will be trained get random rows (frozen blocks get all-zero units, inert
forever), and ``config.intermediate_size`` is updated so the saved directory loads with
``AutoModelForCausalLM.from_pretrained``.

Weight averaging (θ ← (1−λ)θ + λθ_base) uses the widened model at initialisation as θ_base: the new
``down`` columns are pulled toward zero, so averaging with λ scales the new units' contribution by (1−λ)
(λ = 0.5 halves it), just as it shrinks every other trained change.
"""
from __future__ import annotations

import logging
from typing import Iterable, Optional

import torch

from modelprint.errors import ModelprintError

log = logging.getLogger(__name__)


def transformer_blocks(model: torch.nn.Module) -> Optional[torch.nn.ModuleList]:
    """The decoder blocks of a ``*ForCausalLM`` (``model.model.layers``), or None for other layouts."""
    inner = getattr(model, "model", None)
    return getattr(inner, "layers", None)


def trained_block_indices(n_blocks: int, train_layers: Optional[int]) -> list[int]:
    """Indices of the blocks the recipe trains: the last ``train_layers`` (None: all)."""
    first = 0 if train_layers is None else max(0, n_blocks - train_layers)
    return list(range(first, n_blocks))


def _widen(linear: torch.nn.Linear, extra: int, dim: int, init_std: float,
           generator: Optional[torch.Generator]) -> None:
    """Append ``extra`` output rows (dim 0) or input columns (dim 1) to ``linear``, in place."""
    w = linear.weight
    shape = list(w.shape)
    shape[dim] = extra
    new = torch.zeros(shape, dtype=torch.float32)
    if init_std > 0:
        new.normal_(0.0, init_std, generator=generator)
    linear.weight = torch.nn.Parameter(torch.cat([w.detach(), new.to(w.device, w.dtype)], dim=dim),
                                       requires_grad=w.requires_grad)
    if dim == 0:
        linear.out_features += extra
        if linear.bias is not None:
            b = linear.bias
            linear.bias = torch.nn.Parameter(torch.cat([b.detach(), b.new_zeros(extra)]), requires_grad=b.requires_grad)
    else:
        linear.in_features += extra


def gated_mlps(model: torch.nn.Module) -> Optional[list[torch.nn.Module]]:
    """Every block's gated MLP (``gate_proj``/``up_proj``/``down_proj`` Linears), or None for another layout."""
    mlps = [getattr(b, "mlp", None) for b in transformer_blocks(model) or []]
    if not mlps or not all(all(isinstance(getattr(m, n, None), torch.nn.Linear)
                               for n in ("gate_proj", "up_proj", "down_proj")) for m in mlps):
        return None
    return mlps


def expand_mlp(model: torch.nn.Module, extra: int, init_blocks: Optional[Iterable[int]] = None,
               seed: int = 0) -> int:
    """Widen every block's MLP by ``extra`` units, in place; return the new ``intermediate_size``.

    ``init_blocks`` (default: all) get random ``gate``/``up`` rows scaled like the existing ones; the others
    get zeros. ``down`` columns are always zero, so the function is unchanged.
    """
    if extra < 1:
        raise ValueError(f"extra must be at least 1, got {extra}")
    size = getattr(model.config, "intermediate_size", None)
    mlps = gated_mlps(model)
    if mlps is None:
        raise ModelprintError(f"mlp_expansion needs gated MLPs (gate_proj/up_proj/down_proj in model.layers[*].mlp); "
                              f"{type(model).__name__} has another layout (set mlp_expansion=0)")
    if not isinstance(size, int) or any(m.down_proj.in_features != size for m in mlps):
        raise ModelprintError("mlp_expansion needs one intermediate_size shared by every block (set mlp_expansion=0)")
    init = set(range(len(mlps)) if init_blocks is None else init_blocks)
    generator = torch.Generator().manual_seed(seed)
    for i, mlp in enumerate(mlps):
        for name in ("gate_proj", "up_proj"):
            proj = getattr(mlp, name)
            _widen(proj, extra, 0, float(proj.weight.detach().float().std()) if i in init else 0.0, generator)
        _widen(mlp.down_proj, extra, 1, 0.0, None)
        if hasattr(mlp, "intermediate_size"):
            mlp.intermediate_size = size + extra
    model.config.intermediate_size = size + extra
    log.info("MLP expansion: %d → %d units in each of %d blocks (%d initialised for training)", size, size + extra,
             len(mlps), len(init & set(range(len(mlps)))))
    return size + extra
