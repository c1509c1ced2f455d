"""Weight-level stresses: quantization, precision round-trips, pruning, merging with the base.

Each returns a transformed copy (the fingerprinted model itself is never modified).
"""
from __future__ import annotations

import copy
import dataclasses
import logging

import torch

from modelprint.embed import gated_mlps
from modelprint.errors import ModelprintError
from modelprint.models import LoadedModel
from modelprint.stress.serving import served
from modelprint.stress.blueprint import STRESSES, StressContext, Stressed

log = logging.getLogger(__name__)


@STRESSES.register("quantize-int8", source="post-training int8 compression for serving")
def quantize_int8(ctx: StressContext, scheme: str = "dynamic", skip_head: bool = True) -> Stressed:
    """int8 quantization of the Linear layers: ``dynamic`` (torch ``quantize_dynamic``: int8 weights and
    per-batch int8 activations) or ``weight`` (weight-only, symmetric per output channel, as int8 serving does).

    Source: the standard post-training compression a host applies to cut serving cost. Probes: fingerprints
    stored in small weight differences that rounding to 8 bits erases. ``skip_head`` keeps the (tied) LM head
    in float, as common int8 recipes do.
    """
    model = copy.deepcopy(ctx.marked.model).float().cpu()
    names = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
             and not (skip_head and n.endswith("lm_head"))}
    if scheme == "dynamic":
        from torch.ao.quantization import quantize_dynamic

        spec = {n: torch.ao.quantization.default_dynamic_qconfig for n in names}
        return served(ctx.marked, quantize_dynamic(model, spec, dtype=torch.qint8), "int8-dynamic")
    if scheme != "weight":
        raise ModelprintError(f"quantize-int8: scheme must be dynamic or weight, got '{scheme}'")
    with torch.no_grad():
        for n, m in model.named_modules():
            if n in names:
                w = m.weight
                scale = w.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127.0
                w.copy_((w / scale).round().clamp(-127, 127) * scale)
    return served(ctx.marked, model, "int8-weight")


@STRESSES.register("dtype-roundtrip", source="half-precision inference (bf16/fp16)")
def dtype_roundtrip(ctx: StressContext, dtype: str = "bfloat16") -> Stressed:
    """Weights cast to bf16/fp16 and back (what half-precision serving does to them).

    Source: half-precision inference is the default on GPUs. Probes: fingerprints whose
    margin lives below half-precision resolution.
    """
    dt = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype)
    if dt is None:
        raise ModelprintError(f"dtype-roundtrip: dtype must be bfloat16 or float16, got '{dtype}'")
    model = copy.deepcopy(ctx.marked.model).to(dt).to(torch.float32)
    return served(ctx.marked, model, dtype)


def _linear_weights(model: torch.nn.Module):
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and not name.endswith("lm_head"):
            yield name, module.weight


@STRESSES.register("prune", source="magnitude pruning (Han et al. 2015)")
def prune(ctx: StressContext, sparsity: float = 0.3) -> Stressed:
    """Unstructured magnitude pruning: the smallest ``sparsity`` share of each Linear weight set to zero.

    Source: magnitude pruning (Han et al. 2015), a common compression step. Probes:
    fingerprints carried by low-magnitude weights. Embeddings and the LM head are kept.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ModelprintError(f"prune: sparsity must be in [0, 1), got {sparsity}")
    model = copy.deepcopy(ctx.marked.model)
    with torch.no_grad():
        for _, w in _linear_weights(model):
            k = int(sparsity * w.numel())
            if k:
                cut = w.abs().flatten().kthvalue(k).values
                w.masked_fill_(w.abs() <= cut, 0.0)
    return served(ctx.marked, model, f"prune{sparsity:g}")


def _merged(ctx: StressContext, method: str, parents: list[tuple[LoadedModel, float]], base: LoadedModel,
            with_base: bool = False, **params) -> torch.nn.Module:
    """``modelprint.merge``'s registered ``method`` run in process (no disk round-trip), after its checks."""
    from modelprint.merge import get_method
    from modelprint.merge import check_compatible

    models = [m for m, _ in parents]
    check_compatible(models + [base])
    merger = get_method(method, params)
    weights = merger.check_weights([w for _, w in parents])
    device = ctx.marked.device
    with torch.no_grad():
        return merger.merge(models, weights, base if with_base else None, device).to(device)


PARTNERS = ("base", "finetuned")


def _partner(ctx: StressContext, partner: str, what: str) -> LoadedModel:
    """The model merged with ours: the public base, or a copy of it the host fine-tuned separately.

    ``finetuned``: the base after the host's own benign SFT (``host-sft``'s loop and data, 128 NQ-open pairs, one
    epoch, lr 1e-4) — the realistic merge, since a host merges our model with its own fine-tune, not with the base.
    Built once per context and cached: a sweep merges with the same partner several times.
    """
    if partner not in PARTNERS:
        raise ModelprintError(f"{what}: partner must be one of {', '.join(PARTNERS)}, got '{partner}'")
    base = ctx.need_base(what)
    if partner == "base":
        return base
    cached = ctx.cache.get("finetuned-partner")
    if cached is None:
        from modelprint.prompts import response_ids
        from modelprint.stress.stresses.finetune import benign_pairs, train_pairs

        n = 16 if ctx.fast else 128
        pairs = [(q, response_ids(base.tokenizer, a)) for q, a in benign_pairs(n, ctx.seed + 1)]
        model = train_pairs(base, pairs, lr=1e-4, epochs=1, batch_size=8, seed=ctx.seed + 1,
                            desc="partner fine-tune")
        cached = dataclasses.replace(base, model=model, source=f"{base.source}+sft{n}")
        ctx.cache["finetuned-partner"] = cached
    return cached


@STRESSES.register("merge-linear", source="model soups (Wortsman et al. 2022); mergekit linear")
def merge_linear(ctx: StressContext, weight: float = 0.5, partner: str = "base") -> Stressed:
    """Linear merge ``weight·marked + (1−weight)·partner`` (model soups; mergekit ``linear``).

    Source: merging a served model with others is routine (Wortsman et al. 2022). Probes:
    fingerprints that fade when their weight delta is scaled down. ``partner``: the public ``base`` or a
    separately ``finetuned`` copy of it (see :func:`_partner`). ``modelprint.merge``'s linear method;
    a parent of weight 0 is left out.
    """
    if not 0.0 <= weight <= 1.0:
        raise ModelprintError(f"merge-linear: weight must be in [0, 1], got {weight}")
    base = ctx.need_base("merge-linear")
    other = _partner(ctx, partner, "merge-linear")
    parents = [(m, w) for m, w in ((ctx.marked, weight), (other, 1.0 - weight)) if w > 0]
    suffix = "" if partner == "base" else "-ft"
    return served(ctx.marked, _merged(ctx, "linear", parents, base), f"linear{weight:g}{suffix}")


@STRESSES.register("merge-ties", source="TIES merging (Yadav et al. 2023)")
def merge_ties(ctx: StressContext, density: float = 0.2, scale: float = 1.0, partner: str = "base") -> Stressed:
    """TIES merge (Yadav et al. 2023) of the fingerprinted model's task vector onto the base.

    With ``partner="base"`` TIES reduces to trimming: keep the ``density`` share of largest-magnitude entries of
    ``marked − base`` per tensor, add ``scale`` × that to the base. With ``partner="finetuned"`` both task vectors
    (ours and the host's separately fine-tuned copy's) are trimmed, sign-elected and merged, weights 0.5 each.
    Probes: fingerprints spread over many small weight changes. ``modelprint.merge``'s ties method, in process.
    """
    base = ctx.need_base("merge-ties")
    other = _partner(ctx, partner, "merge-ties")
    parents = [(ctx.marked, 1.0)] if partner == "base" else [(ctx.marked, 0.5), (other, 0.5)]
    model = _merged(ctx, "ties", parents, base, with_base=True, density=density, scale=scale)
    suffix = "" if partner == "base" else "-ft"
    return served(ctx.marked, model, f"ties{density:g}{suffix}")


def _keep_units(mlp: torch.nn.Module, width: int) -> None:
    """Keep the first ``width`` feed-forward units of one gated MLP, in place (rows of gate/up, columns of down)."""
    for name in ("gate_proj", "up_proj"):
        lin = getattr(mlp, name)
        lin.weight = torch.nn.Parameter(lin.weight.detach()[:width].clone(), requires_grad=False)
        if lin.bias is not None:
            lin.bias = torch.nn.Parameter(lin.bias.detach()[:width].clone(), requires_grad=False)
        lin.out_features = width
    down = mlp.down_proj
    down.weight = torch.nn.Parameter(down.weight.detach()[:, :width].clone(), requires_grad=False)
    down.in_features = width
    if hasattr(mlp, "intermediate_size"):  # as embed's expand_mlp keeps it
        mlp.intermediate_size = width


@STRESSES.register("mlp-truncate", source="a host undoing MLP expansion (embed's mlp_expansion widens every block; "
                   "the public base's config.json gives its width)", kind="attack")
def mlp_truncate(ctx: StressContext, width: int = 0) -> Stressed:
    """Cut every block's MLP back to ``width`` units (0: the base's ``intermediate_size``), dropping the rest.

    Source: MLP expansion (embed's ``mlp_expansion``) appends its units after the base's, and a published model's
    ``config.json`` shows the widened ``intermediate_size`` next to the base's public one, so a host who notices
    can restore the base's shape for free by keeping the first units. Probes: fingerprints that live in the
    added units. A model already at (or under) ``width`` is served unchanged.
    """
    if width < 0:
        raise ModelprintError(f"mlp-truncate: width must be ≥ 0, got {width}")
    if width == 0:
        width = int(getattr(ctx.need_base("mlp-truncate with width=0").model.config, "intermediate_size", 0) or 0)
        if width <= 0:
            raise ModelprintError("mlp-truncate: the base's config has no intermediate_size; give width")
    model = copy.deepcopy(ctx.marked.model)
    mlps = gated_mlps(model)
    if mlps is None:
        raise ModelprintError(f"mlp-truncate needs gated MLPs (gate_proj/up_proj/down_proj); "
                              f"{type(model).__name__} has another layout")
    current = mlps[0].gate_proj.out_features
    if current > width:
        with torch.no_grad():
            for mlp in mlps:
                _keep_units(mlp, width)
        model.config.intermediate_size = width
    log.info("mlp-truncate: %d → %d units per block", current, min(current, width))
    return served(ctx.marked, model, f"mlp-truncate{width}", units_before=current, units_after=min(current, width))
