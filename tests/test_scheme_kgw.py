"""KGW-style domain watermark on tiny models: green lists, distillation by embed, the green-z verifier."""
from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import tiny_recipe

from modelprint.errors import ConfigError, FingerprintFileError
from modelprint.generate import generate
from modelprint.schemes import kgw
from modelprint.testing import tiny_model
from modelprint.verify import verify


@pytest.fixture(scope="module")
def varied():
    """A tiny model whose greedy text varies with its input (larger init scale), so pairs are diverse."""
    return tiny_model(seed=0, init_std=0.5)


@pytest.fixture(scope="module")
def kgw_set(varied):
    return generate(varied, strategy="kgw-watermark", num_fingerprints=16, key_length=10, response_length=24, seed=3)


def test_green_lists_are_keyed_and_about_gamma():
    tokens = np.arange(20000)
    a = kgw.green(123, 7, tokens, 0.25)
    assert abs(a.mean() - 0.25) < 0.02
    assert (a == kgw.green(123, 7, tokens, 0.25)).all()
    assert (a != kgw.green(124, 7, tokens, 0.25)).mean() > 0.3  # another key, another list
    assert (a != kgw.green(123, 8, tokens, 0.25)).mean() > 0.3  # another previous token, another list
    assert kgw.count_green(123, 0.25, [(7, int(t)) for t in np.flatnonzero(a)[:5]]) == 5


def test_binomial_tail_and_z():
    assert kgw.z_score(25, 100, 0.25) == 0.0
    assert kgw.log10_binomial_tail(0, 10, 0.25) == 0.0
    assert math.isclose(kgw.log10_binomial_tail(10, 10, 0.25), 10 * math.log10(0.25))


def test_generation_contract(varied, kgw_set):
    assert len(kgw_set) == 16 and kgw_set.strategy == "kgw-watermark"
    assert all(len(fp.response_ids) == 24 and fp.null_prob == 1.0 for fp in kgw_set)
    keys = {fp.meta["watermark_key"] for fp in kgw_set}
    assert len(keys) == 1 and "watermark_key" not in str(kgw_set.params)  # the secret stays out of the header
    assert np.mean([fp.meta["green_fraction"] for fp in kgw_set]) > 0.5  # the bias shows in the responses
    again = generate(varied, strategy="kgw-watermark", num_fingerprints=16, key_length=10, response_length=24, seed=3)
    assert [fp.response_ids for fp in again] == [fp.response_ids for fp in kgw_set]


def test_embedding_teaches_the_watermark(varied, kgw_set):
    from modelprint.embed import embed

    base = verify(varied, kgw_set)
    assert base.verdict == "no match" and base.statistic["green_fraction"] < 0.4 and base.verifier == "green-z"
    marked = embed(varied, kgw_set, None, config=tiny_recipe(max_epochs=30, stop_retention=0.9)).model
    rec = verify(marked, kgw_set)
    assert rec.verdict == "match" and rec.log10_p_value < -6 and rec.statistic["z"] > 6
    assert rec.statistic["green_fraction"] > base.statistic["green_fraction"] + 0.2
    assert "binomial" in rec.decision_rule


def test_bad_input_is_one_line(varied, kgw_set):
    import copy

    broken = copy.deepcopy(kgw_set)
    broken.fingerprints[0].meta["watermark_key"] = "not-hex"
    broken.fingerprints[1].meta.pop("gamma")
    with pytest.raises(FingerprintFileError, match="watermark_key"):
        verify(varied, broken)
    with pytest.raises(ConfigError, match="tokenizer"):
        kgw._set_tokenizer("no-such-model-xyz", "sha256:0")
