"""delta_density: the embedding changes only a sparse share of each trained tensor, so a TIES trim keeps it all."""
from __future__ import annotations

import pytest
import torch

from modelprint.errors import ConfigError

from conftest import tiny_recipe
from test_embed_margin import MARGIN, peri_set  # noqa: F401  (module fixture reused)


def _deltas(base, marked):
    before = dict(base.model.named_parameters())
    return {n: (p.detach() - before[n].detach()) for n, p in marked.model.named_parameters()}


@pytest.fixture(scope="module")
def sparse_run(tiny, peri_set):  # noqa: F811
    from modelprint.embed import embed

    return embed(tiny, peri_set, None, config=tiny_recipe(**MARGIN, delta_density=0.1))


def test_only_the_density_share_of_each_tensor_changes(tiny, sparse_run):
    deltas = _deltas(tiny, sparse_run.model)
    trained = [d for d in deltas.values() if d.abs().sum() > 0]
    assert trained, "the embedding changed nothing"
    for d in trained:
        assert (d != 0).float().mean() <= 0.1 + 1.0 / d.numel()


def test_the_sparse_change_still_embeds_and_a_ties_trim_keeps_all_of_it(tiny, peri_set, sparse_run):  # noqa: F811
    from modelprint.merge.task_arithmetic import sparsify
    from modelprint.verify import verify

    assert sparse_run.retention >= 0.9
    rec = verify(sparse_run.model, peri_set, match="candidate", alpha=1e-3, sequential=False)
    assert rec.verdict == "match"
    for d in _deltas(tiny, sparse_run.model).values():  # TIES's trim at density 0.2 is the identity on it
        assert torch.equal(sparsify(d, 0.2), d)


def test_a_dense_run_is_what_a_trim_cuts(tiny, peri_set):  # noqa: F811
    """The control: without delta_density Adam moves (nearly) every trained entry, so a trim removes most of them."""
    from modelprint.embed import embed

    dense = embed(tiny, peri_set, None, config=tiny_recipe(**MARGIN))
    shares = [(d != 0).float().mean().item() for d in _deltas(tiny, dense.model).values() if d.abs().sum() > 0]
    assert max(shares) > 0.5


def test_greedy_objective_is_confined_too(tiny, tiny_set):
    from modelprint.embed import embed

    run = embed(tiny, tiny_set, None, config=tiny_recipe(delta_density=0.25))
    for d in _deltas(tiny, run.model).values():
        assert (d != 0).float().mean() <= 0.25 + 1.0 / d.numel()
    assert run.retention >= 0.5


def test_lora_has_no_sparse_support():
    with pytest.raises((ConfigError, ValueError), match="delta_density"):
        tiny_recipe(delta_density=0.1, lora={"enabled": True})
