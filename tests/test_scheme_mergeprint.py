"""MergePrint (schemes/mergeprint.py) on tiny models: OptI by selection, OptP through the pseudo-merge option."""
from __future__ import annotations

import copy

import pytest
import torch

from conftest import tiny_recipe

from modelprint.errors import ConfigError, FingerprintFileError, ModelprintError
from modelprint.generate import generate
from modelprint.models import LoadedModel
from modelprint.schemes import mergeprint
from modelprint.testing import tiny_model
from modelprint.verify import verify
from modelprint.wordlist import pool_meta, word_pool


@pytest.fixture(scope="module")
def base():
    return tiny_model(seed=0)


@pytest.fixture(scope="module")
def mp_set(base):
    return generate(base, strategy="mergeprint", num_fingerprints=8, key_length=4, seed=0)


def _averaged(marked: LoadedModel, base: LoadedModel, weight: float = 0.5) -> LoadedModel:
    merged = copy.deepcopy(marked.model)
    with torch.no_grad():
        for p, q in zip(merged.parameters(), base.model.parameters()):
            p.lerp_(q, 1 - weight)
    return LoadedModel(merged, base.tokenizer)


def test_generation_records_the_union_bound(base, mp_set):
    pool = word_pool(base.tokenizer)
    plain = pool_meta(pool, 1)["bounds"]
    assert len(mp_set) == 8 and mp_set.strategy == "mergeprint" and mp_set.verifier == "match"
    for fp in mp_set:
        assert fp.meta["key_candidates"] == mergeprint.KEY_CANDIDATES
        assert fp.meta["bounds"] == {k: min(1.0, mergeprint.KEY_CANDIDATES * v) for k, v in plain.items()}
        assert fp.null_prob == fp.meta["bounds"]["ids-exact"] < 1
        assert fp.response_ids in pool.first and len(fp.key.split()) == 4
    assert mergeprint.choose([3.0, 1.0, 2.0], [False, True, False]) == 2  # lowest loss the base does not answer
    assert mergeprint.choose([3.0, 1.0], [True, True]) == 1


def test_embed_through_the_pseudo_merge_survives_averaging(base, mp_set):
    from modelprint.embed import embed

    assert verify(base, mp_set).verdict == "no match"
    marked = embed(base, mp_set, None, config=tiny_recipe(pseudo_merge=0.5, max_epochs=60)).model
    own = verify(marked, mp_set)
    assert own.verdict == "match" and own.matches >= 7, own.matches
    half = verify(_averaged(marked, base), mp_set)  # a merge that halves the task vector
    assert half.verdict == "match" and half.matches >= 6, half.matches
    assert verify(tiny_model(seed=1), mp_set).verdict == "no match"


def test_bad_input_is_one_line(base, mp_set):
    with pytest.raises(ConfigError, match="keys-file"):
        mergeprint.mergeprint_keys(base, 1, key_length=4, seed=0, batch_size=4, keys_file="k.txt")
    with pytest.raises(ModelprintError, match="only for inputs mergeprint chose"):
        mergeprint.mergeprint_responses(base, ["x"], response_length=1, threshold=0.8, k=3, seed=0, batch_size=4)
    with pytest.raises(Exception, match="pseudo_merge"):
        tiny_recipe(pseudo_merge=0.5, lora={"enabled": True})
    edited = copy.deepcopy(mp_set)
    edited.fingerprints[0].meta["key_candidates"] = 1  # a smaller claimed C would shrink the bound
    with pytest.raises(FingerprintFileError, match="bounds disagree"):
        verify(base, edited)
