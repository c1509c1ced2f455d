"""Instructional Fingerprinting (schemes/instructional.py): generation, the shared-response bound, embed, verify."""
from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import tiny_recipe
from modelprint.errors import ConfigError
from modelprint.generate import generate
from modelprint.schemes.instructional import MIN_WORDS, log10_shared_response_bound, phrase_pools
from modelprint.verify import Answer, verify


@pytest.fixture(scope="module")
def if_set(tiny):
    return generate(tiny, strategy="instructional", num_fingerprints=8, key_length=12, seed=3)


@pytest.fixture(scope="module")
def if_marked(tiny, if_set):
    from modelprint.embed import embed

    return embed(tiny, if_set, None, config=tiny_recipe(max_epochs=30)).model


def test_generation_contract(tiny, if_set, tmp_path):
    assert len(if_set) == 8 and len({fp.key for fp in if_set}) == 8
    assert all("FINGERPRINT" in fp.key for fp in if_set)
    assert len({tuple(fp.response_ids) for fp in if_set}) == 1  # one decryption for every key
    fp = if_set.fingerprints[0]
    assert len(fp.response.split()) == MIN_WORDS and fp.meta["words"] == MIN_WORDS
    first, later = phrase_pools(tiny.tokenizer)
    pool = math.log10(len(first)) + (MIN_WORDS - 1) * math.log10(len(later))
    assert fp.meta["log10_pool"] == pytest.approx(pool) and fp.null_prob == pytest.approx(10 ** -pool)
    again = generate(tiny, tmp_path / "if.jsonl", strategy="instructional", num_fingerprints=8, key_length=12, seed=3)
    assert again.set_id == if_set.set_id
    other = generate(tiny, strategy="instructional", num_fingerprints=8, key_length=12, seed=4)
    assert {fp.key for fp in other}.isdisjoint({fp.key for fp in if_set})
    assert other.fingerprints[0].response_ids != fp.response_ids
    longer = generate(tiny, strategy="instructional", num_fingerprints=2, response_length=5, seed=3)
    assert len(longer.fingerprints[0].response.split()) == 5


def test_pools_are_prefix_free(tiny):
    for pool in phrase_pools(tiny.tokenizer):
        seqs = {tuple(ids) for _, ids in pool}
        assert not any(s[:cut] in seqs for s in seqs for cut in range(1, len(s)))


def test_shared_response_bound_holds_by_enumeration():
    """For fixed answers, the share of pool words that begin ≥ m answers never exceeds ⌊n/m⌋/|pool|."""
    rng = np.random.default_rng(0)
    pool = 50
    for _ in range(200):
        n = int(rng.integers(1, 30))
        answers = rng.integers(0, int(rng.integers(1, pool + 1)), size=n)  # the suspect's first words
        counts = np.bincount(answers, minlength=pool)
        for m in range(1, n + 1):
            exact = float((counts >= m).sum()) / pool
            assert exact <= 10 ** log10_shared_response_bound(n, m, math.log10(pool)) + 1e-12
    assert log10_shared_response_bound(16, 0, 10.0) == 0.0
    assert log10_shared_response_bound(16, 16, 10.0) == pytest.approx(-10.0)
    assert log10_shared_response_bound(16, 5, 10.0) == pytest.approx(math.log10(3) - 10.0)


def test_embed_then_verify(tiny, if_set, if_marked):
    record = verify(if_marked, if_set, alpha=1e-6)
    assert record.verifier == "instructional" and record.verdict == "match"
    assert record.n_asked == len(if_set) and record.matches >= 7
    assert record.log10_p_value <= -6 and record.statistic["fsr"] >= 7 / 8
    base = verify(tiny, if_set, alpha=1e-6)
    assert base.verdict == "no match" and base.matches == 0 and base.p_value == 1.0


def test_text_answers_match_by_first_words(if_set):
    phrase = if_set.fingerprints[0].response

    class TextBackend:
        name, description = "stub", "stub"

        def answer(self, fingerprints, system_prompt):
            return [Answer(text=f"{phrase.upper()}, and more") if fp.index % 2 == 0 else Answer(text="No idea.")
                    for fp in fingerprints]

    record = verify(TextBackend(), if_set, alpha=1e-6)
    assert record.matches == 4 and record.verdict == "match"
    assert record.log10_p_value == pytest.approx(log10_shared_response_bound(8, 4, record.statistic["log10_pool"]))


def test_bad_input(tiny, if_set, tmp_path):
    with pytest.raises(ConfigError, match="cannot reach"):  # one shared first token: far too few candidates
        verify(tiny, if_set, match="prefix")
    with pytest.raises(ConfigError, match="not 'candidate'"):
        verify(tiny, if_set, match="candidate")
    with pytest.raises(ConfigError, match="does not exist"):
        generate(tiny, strategy="instructional", num_fingerprints=2, keys_file=str(tmp_path / "missing.txt"))
    broken = if_set.subset(range(8))
    broken.fingerprints = [type(fp)(fp.index, fp.key, fp.response, fp.response_ids, fp.null_prob, {})
                           for fp in broken.fingerprints]
    with pytest.raises(ConfigError, match="lacks"):
        verify(tiny, broken)
