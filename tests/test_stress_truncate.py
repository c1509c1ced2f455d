"""mlp-truncate: a host cutting a widened model (embed's mlp_expansion) back to its base's width."""
from __future__ import annotations

import copy

import pytest
import torch

from modelprint.embed.expansion import expand_mlp
from modelprint.errors import ModelprintError
from modelprint.stress.blueprint import StressContext, get_stress
from modelprint.testing import tiny_model


def _logits(lm, ids):
    with torch.no_grad():
        return lm.model(input_ids=ids).logits


@pytest.fixture(scope="module")
def base():
    return tiny_model(seed=0)


def _widened(base, extra: int = 8, train_new_units: bool = False):
    lm = copy.deepcopy(base)
    width = expand_mlp(lm.model, extra, seed=0)
    lm.model.config.intermediate_size = width
    if train_new_units:  # what training does to the added units: their down columns stop being zero
        with torch.no_grad():
            for block in lm.model.model.layers:
                block.mlp.down_proj.weight[:, -extra:].normal_(0.0, 0.5)
    return lm


def test_truncation_restores_the_base_shape_and_drops_only_the_added_units(base):
    ids = torch.randint(0, base.model.config.vocab_size, (2, 7), generator=torch.Generator().manual_seed(1))
    marked = _widened(base, train_new_units=True)
    assert not torch.allclose(_logits(marked, ids), _logits(base, ids), atol=1e-4)  # the added units act
    out = get_stress("mlp-truncate").run(StressContext(marked, base, {}))
    cut = out.model.model
    width = base.model.config.intermediate_size
    assert cut.config.intermediate_size == width
    assert all(b.mlp.gate_proj.weight.shape[0] == width and b.mlp.down_proj.weight.shape[1] == width
               for b in cut.model.layers)
    # the base's own units were untouched here, so cutting the added ones gives the base back exactly
    assert torch.allclose(_logits(out.model, ids), _logits(base, ids), atol=1e-5)
    assert marked.model.model.layers[0].mlp.gate_proj.weight.shape[0] == width + 8  # the marked model is a copy


def test_untouched_model_and_bad_parameters(base):
    ids = torch.arange(5).unsqueeze(0)
    same = get_stress("mlp-truncate").run(StressContext(base, base, {}))
    assert torch.allclose(_logits(same.model, ids), _logits(base, ids))
    with pytest.raises(ModelprintError, match="--base"):
        get_stress("mlp-truncate").run(StressContext(_widened(base), None, {}))
    with pytest.raises(ModelprintError, match="width"):
        get_stress("mlp-truncate").run(StressContext(base, base, {}), width=-1)
    narrow = get_stress("mlp-truncate").run(StressContext(_widened(base), None, {}), width=4)  # an explicit width
    assert narrow.model.model.config.intermediate_size == 4
