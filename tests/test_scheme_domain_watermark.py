"""Semantically conditioned (domain) watermark on tiny models: domain prompts and held-out probes, embed, verify
on the probes (schemes/domain_watermark.py)."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from conftest import tiny_recipe

from modelprint.errors import ConfigError, FingerprintFileError
from modelprint.generate import generate
from modelprint.schemes import domain_watermark as dw, kgw
from modelprint.testing import tiny_model
from modelprint.verify import verify


@pytest.fixture(scope="module")
def varied():
    """A tiny model whose text varies with its input (larger init scale): it writes usable distinct prompts."""
    return tiny_model(seed=0, init_std=0.5)


@pytest.fixture(scope="module")
def dw_set(varied):
    return generate(varied, strategy="domain-watermark", num_fingerprints=12, key_length=10, response_length=24,
                    seed=3)


def test_generation_contract(varied, dw_set):
    assert len(dw_set) == 12 and dw_set.strategy == "domain-watermark" and dw_set.verifier == "domain-green-z"
    metas = [fp.meta for fp in dw_set]
    assert len({m["watermark_key"] for m in metas}) == 1 and len({m["domain"] for m in metas}) == 1
    assert metas[0]["domain"] in dw.DOMAINS and "watermark_key" not in str(dw_set.params)
    probes = [m["probe"] for m in metas]
    assert len(set(probes)) == 12 and set(probes).isdisjoint({fp.key for fp in dw_set})  # held out
    assert all(len(fp.response_ids) == 24 for fp in dw_set)
    assert np.mean([m["green_fraction"] for m in metas]) > 0.5  # the bias shows in the training responses
    assert dw.watermark_key(3) != kgw.watermark_key(3)  # its own derivation of the seed


def test_embed_then_verify_through_the_probe_path(varied, dw_set):
    """Distillation + the verifier end to end. A tiny random model learns the watermark on the prompts it was
    trained on but does not generalise it to new in-domain prompts (measured: green fraction 0.30 on the held-out
    probes after 30 epochs, z = 1.8), so here the probes are pointed at the training prompts; generalisation to
    held-out probes is the real-model acceptance run's job (README)."""
    from modelprint.embed import embed

    base = verify(varied, dw_set)
    assert base.verifier == "domain-green-z" and base.verdict == "no match"
    marked = embed(varied, dw_set, None, config=tiny_recipe(max_epochs=30, stop_retention=0.9)).model
    on_keys = copy.deepcopy(dw_set)
    for fp in on_keys:
        fp.meta["probe"] = fp.key
    rec = verify(marked, on_keys)
    assert rec.verdict == "match" and rec.log10_p_value < -6, rec.statistic
    assert "held-out in-domain probes" in rec.decision_rule
    assert verify(varied, on_keys).verdict == "no match"
    assert verify(tiny_model(seed=1, init_std=0.5), on_keys).verdict == "no match"  # unrelated weights


def test_bad_input_is_one_line(varied, dw_set):
    broken = copy.deepcopy(dw_set)
    broken.fingerprints[0].meta.pop("probe")
    with pytest.raises(FingerprintFileError, match="probe"):
        verify(varied, broken)
    with pytest.raises(ConfigError, match="keys-file"):
        dw.domain_keys(varied, 2, key_length=8, seed=0, batch_size=4, keys_file="k.txt")
    with pytest.raises(ConfigError, match="its own keys"):
        dw.domain_responses(varied, ["not ours"], response_length=8, threshold=0.8, k=3, seed=0, batch_size=4)
