"""ImF (implicit fingerprints, schemes/imf.py) on tiny models: ADG bits in and out, generate → embed → verify."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from conftest import tiny_recipe

from modelprint.errors import FingerprintFileError
from modelprint.generate import generate
from modelprint.prompts import encode_prompt
from modelprint.schemes import imf
from modelprint.testing import tiny_model
from modelprint.verify import verify
from modelprint.wordlist import rng_for


@pytest.fixture(scope="module")
def varied():
    """A tiny model with spread-out next-token distributions (larger init scale): many bits per token."""
    return tiny_model(seed=0, init_std=0.5)


@pytest.fixture(scope="module")
def imf_set(varied):
    return generate(varied, strategy="imf", num_fingerprints=8, key_length=10, response_length=16, seed=3)


def test_adg_groups_partition_and_bits_round_trip(varied):
    rng = np.random.default_rng(0)
    for _ in range(50):
        probs = np.sort(rng.dirichlet(np.ones(64) * 0.3))[::-1]
        probs = probs / probs.sum()
        ids = rng.permutation(1000)[:64]
        if probs[0] > 0.5:
            continue
        groups = imf._groups(probs, ids)
        assert sorted(t for _, g in groups for t in g) == sorted(ids)  # a partition of the tokens
        assert len(groups) & (len(groups) - 1) == 0  # a power of two: every bit pattern names a group
        bits = [int(b) for b in rng.integers(0, 2, size=40)]
        token, used = imf.embed_step(probs, ids, iter(bits), rng)
        assert imf.decode_step(probs, ids, token) == bits[:used] and used >= 1
    tok = varied.tokenizer
    prompt = encode_prompt(tok, "Tell me about the river.")
    bits = [int(b) for b in rng.integers(0, 2, size=imf.SECRET_BITS)]
    ids, embedded = imf.stego_answer(varied, prompt, bits, 12, rng_for(0, 1))
    decoded = imf.decode_answer(varied, prompt, ids, 12)
    assert embedded >= 8 and decoded[:embedded] == bits[:embedded]


def test_generation_contract(imf_set):
    assert len(imf_set) == 8 and imf_set.strategy == "imf" and imf_set.verifier == "imf-bits"
    assert len({fp.meta["bits"] for fp in imf_set}) == 8  # one secret bit string per key
    assert all(len(fp.response_ids) == 16 and fp.meta["embedded_bits"] >= 4 for fp in imf_set)
    assert "bits" not in str(imf_set.params)


def test_embed_then_verify(varied, imf_set):
    from modelprint.embed import embed

    base = verify(varied, imf_set)
    assert base.verdict == "no match" and base.verifier == "imf-bits"
    marked = embed(varied, imf_set, None, config=tiny_recipe(max_epochs=40)).model
    rec = verify(marked, imf_set)
    assert rec.verdict == "match" and rec.log10_p_value < -6, rec.statistic
    assert rec.statistic["agreement"] > 0.9 and rec.matches >= 6
    other = verify(tiny_model(seed=1, init_std=0.5), imf_set)
    assert other.verdict == "no match" and other.log10_p_value > -3


def test_bad_input_is_one_line(varied, imf_set):
    broken = copy.deepcopy(imf_set)
    broken.fingerprints[0].meta["bits"] = "01"
    with pytest.raises(FingerprintFileError, match="secret bits"):
        verify(varied, broken)
