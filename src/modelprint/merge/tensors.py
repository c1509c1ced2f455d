"""Small helpers shared by the parameter-space methods: state dicts in, a fresh model out."""
from __future__ import annotations

import copy

import torch


def float_state(model: torch.nn.Module, device: torch.device) -> dict[str, torch.Tensor]:
    """The model's parameters as float32 tensors on ``device`` (tied tensors appear under each name)."""
    return {k: v.detach().to(device=device, dtype=torch.float32) for k, v in model.state_dict().items()}


def clone_with_state(template: torch.nn.Module, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A deep copy of ``template`` holding ``state`` (cast to the template's dtypes), on the CPU."""
    model = copy.deepcopy(template).to("cpu")
    own = model.state_dict()
    model.load_state_dict({k: v.to(device="cpu", dtype=own[k].dtype) for k, v in state.items()})
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()
    return model.eval()
