"""Keep what the trained layers compute on ordinary text: a penalty on each weight change's output there.

Answer agreement is lost at near-ties: a held-out question whose base answer led its runner-up by 0.16 nats flips
when the fingerprint's weight change drifts that gap by a few tenths of a nat (benchmarks/agreement_drift.py). The
KL anchors hold the output distribution at a few hundred chosen points; a change can satisfy them there and still
move every other input. MEMIT's preservation term constrains the change itself instead: for a linear layer with
base weight W and change δ, the output change on an ordinary input x is δx, so

    ‖δX‖² / ‖WX‖² = tr(δ C δᵀ) / tr(W C Wᵀ),   C = X Xᵀ over ordinary tokens,

is the relative energy of that layer's output change over the whole ordinary distribution (second moments suffice:
C is collected once from the base model). The penalty is its mean over the trained linear layers; a change that
lives in directions ordinary text barely uses costs little, one that moves what ordinary text reads costs a lot.
"""
from __future__ import annotations

import logging
from typing import Sequence

import torch

from modelprint.embed.frozen_bottom import padded_inputs
from modelprint.embed.sparse_delta import _plain  # DDP's .module prefix, dropped
from modelprint.errors import ConfigError

log = logging.getLogger(__name__)


class OutputPrior:
    """Per trained linear layer: the input second moments C on ordinary text and the base output energy."""

    def __init__(self, covariances: dict[str, torch.Tensor], base: dict[str, torch.Tensor]) -> None:
        self.covariances = covariances
        self.base = base
        self.scale = {n: float(((base[n] @ c) * base[n]).sum().clamp_min(1e-12)) for n, c in covariances.items()}

    @classmethod
    @torch.no_grad()
    def collect(cls, model: torch.nn.Module, sequences: Sequence[Sequence[int]], pad_id: int,
                device: torch.device, batch_size: int = 16) -> "OutputPrior":
        """Run ``model`` (the base weights) over ``sequences`` and sum each trainable linear layer's input x xᵀ
        over their real tokens."""
        head = model.get_output_embeddings()  # what it computes is the logits: the KL terms hold those
        layers = {name: m for name, m in model.named_modules()
                  if isinstance(m, torch.nn.Linear) and m.weight.requires_grad and m is not head}
        if not layers:
            raise ConfigError("margin.output_prior needs trained linear layers (train_layers, not only norms or "
                              "embeddings); set margin.output_prior=0")
        sums = {name: torch.zeros(m.in_features, m.in_features, device=device) for name, m in layers.items()}
        keep: dict[str, torch.Tensor] = {}

        def hook(name: str):
            def record(module, inputs, output):
                x = inputs[0].float()[keep["mask"]]
                sums[name].addmm_(x.T, x)
            return record

        handles = [m.register_forward_hook(hook(name)) for name, m in layers.items()]
        try:
            tokens = 0
            for start in range(0, len(sequences), batch_size):
                inputs = {k: v.to(device) for k, v in padded_inputs(sequences[start:start + batch_size],
                                                                    pad_id).items()}
                keep["mask"] = inputs["attention_mask"].bool()
                tokens += int(keep["mask"].sum())
                model(**inputs, logits_to_keep=1)
        finally:
            for h in handles:
                h.remove()
        log.info("output prior: input second moments of %d linear layers over %d ordinary tokens", len(layers),
                 tokens)
        base = {_plain(name): m.weight.detach().float().clone() for name, m in layers.items()}
        return cls({_plain(n): s / max(tokens, 1) for n, s in sums.items()}, base)

    def penalty(self, model: torch.nn.Module) -> torch.Tensor:
        """Mean over the layers of ‖δX‖² / ‖WX‖² (differentiable in the current weights)."""
        terms = []
        for name, p in model.named_parameters():
            layer = _plain(name).removesuffix(".weight")
            cov = self.covariances.get(layer)
            if cov is None or not name.endswith(".weight"):
                continue
            delta = p.float() - self.base[layer]
            terms.append(((delta @ cov) * delta).sum() / self.scale[layer])
        if not terms:
            return torch.zeros(())
        return torch.stack(terms).mean()
