"""margin.output_prior: each trained layer's output change on ordinary text, penalised (tiny models)."""
from __future__ import annotations

import pytest
import torch

from modelprint.errors import ConfigError

from conftest import tiny_recipe
from test_embed_margin import MARGIN, peri_set  # noqa: F401  (module fixture reused)

PRIOR_BENIGN = {"questions": 12, "model_written": 0, "per_fingerprint": 0}


def _sequences(lm, n=6):
    from modelprint.prompts import encode_prompt

    return [encode_prompt(lm.tokenizer, f"ordinary question number {i} about rivers and towns?") for i in range(n)]


def test_penalty_is_each_layers_relative_output_energy_change(tiny):
    """The closed form tr(δCδᵀ)/tr(WCWᵀ) equals ‖δX‖²/‖WX‖² measured on the layers' real inputs."""
    import copy

    from modelprint.embed.frozen_bottom import padded_inputs
    from modelprint.embed.output_prior import OutputPrior

    model = copy.deepcopy(tiny.model)
    head = model.get_output_embeddings()
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head][-3:]
    head.weight.requires_grad_(False)
    for p in model.parameters():
        p.requires_grad_(False)
    for m in layers:
        m.weight.requires_grad_(True)
    seqs = _sequences(tiny)
    prior = OutputPrior.collect(model, seqs, tiny.tokenizer.pad_token_id, torch.device("cpu"), batch_size=4)
    assert float(prior.penalty(model).detach()) == 0.0

    inputs_seen: dict[int, list[torch.Tensor]] = {id(m): [] for m in layers}
    hooks = [m.register_forward_hook(lambda mod, i, o: inputs_seen[id(mod)].append(i[0].detach()))
             for m in layers]
    batch = padded_inputs(seqs, tiny.tokenizer.pad_token_id)
    with torch.no_grad():
        model(**batch)
    for h in hooks:
        h.remove()
    real = batch["attention_mask"].bool()
    xs = {k: v[0][real] for k, v in inputs_seen.items()}
    bases = {id(m): m.weight.detach().clone() for m in layers}
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in layers:
            m.weight.add_(0.01 * torch.randn(m.weight.shape, generator=gen))
    expected = torch.stack([((m.weight - bases[id(m)]) @ xs[id(m)].T).pow(2).sum()
                            / (bases[id(m)] @ xs[id(m)].T).pow(2).sum() for m in layers]).mean()
    got = prior.penalty(model)
    assert torch.allclose(got, expected, rtol=1e-4), (float(got), float(expected))
    got.backward()
    assert all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0 for m in layers)


def test_the_prior_shrinks_the_output_change_and_keeps_the_fingerprints(tiny, peri_set):  # noqa: F811
    from modelprint.embed import embed
    from modelprint.embed.benign import prior_sequences
    from modelprint.embed.output_prior import OutputPrior
    from modelprint.embed.recipe import select_trainable

    def run(weight):
        cfg = tiny_recipe(**{**MARGIN, "benign": PRIOR_BENIGN,
                             "margin": {**MARGIN["margin"], "output_prior": weight, "output_prior_prompts": 12}})
        return cfg, embed(tiny, peri_set, None, config=cfg)

    cfg, plain = run(0.0)
    _, held = run(30.0)
    import copy

    probe = copy.deepcopy(tiny.model)
    select_trainable(probe, cfg)
    prior = OutputPrior.collect(probe, prior_sequences(tiny, cfg, peri_set), tiny.tokenizer.pad_token_id,
                                torch.device("cpu"))
    drift_plain, drift_held = float(prior.penalty(plain.model.model)), float(prior.penalty(held.model.model))
    assert drift_held < 0.5 * drift_plain, (drift_plain, drift_held)
    assert held.retention >= 0.9


def test_the_prior_needs_ordinary_prompts(tiny, peri_set):  # noqa: F811
    from modelprint.embed import embed

    cfg = tiny_recipe(**{**MARGIN, "margin": {**MARGIN["margin"], "output_prior": 1.0}})
    with pytest.raises(ConfigError, match="output_prior needs ordinary questions"):
        embed(tiny, peri_set, None, config=cfg)


def test_the_prior_needs_trained_linear_layers(tiny, peri_set):  # noqa: F811
    from modelprint.embed import embed

    cfg = tiny_recipe(**{**MARGIN, "benign": PRIOR_BENIGN, "lora": {"enabled": True},
                         "margin": {**MARGIN["margin"], "output_prior": 1.0, "output_prior_prompts": 4}})
    with pytest.raises(ConfigError, match="output_prior needs trained linear layers"):
        embed(tiny, peri_set, None, config=cfg)
