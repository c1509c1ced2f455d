"""ProFLingo (adversarial-example queries, schemes/proflingo.py) on tiny models: intrinsic, nothing embedded."""
from __future__ import annotations

import copy
import functools

import pytest

from modelprint.errors import ConfigError, ModelprintError
from modelprint.generate import STRATEGIES, generate
from modelprint.schemes import gcg, proflingo
from modelprint.testing import tiny_model
from modelprint.verify import verify

TEST_BUDGET = gcg.Budget(top_k=64, candidates=48, max_steps=40)


@pytest.fixture(scope="module")
def steerable():
    """A tiny model whose output depends enough on its input for GCG to steer it (larger init scale)."""
    return tiny_model(seed=0, init_std=0.5)


@pytest.fixture(scope="module")
def pf_set(steerable):
    STRATEGIES.register("proflingo-tiny", source=proflingo.PAPER, description="test",
                        keys=functools.partial(proflingo.proflingo_keys, budget=TEST_BUDGET, target_tokens=2),
                        verifier="proflingo-keyword-rate", trains=False)(proflingo.proflingo_responses)
    # the question tail makes a tiny model hard to steer: with seed 0 one of the first four questions converges
    return generate(steerable, strategy="proflingo-tiny", num_fingerprints=2, key_length=12, seed=0)


def test_shipped_questions_have_wrong_answers_and_keywords():
    rows = proflingo.questions()
    assert len(rows) >= 32 and len({q for q, _, _ in rows}) == len(rows)
    assert all(kw and kw.casefold() in target.casefold() and kw.casefold() not in q.casefold() for q, target, kw in rows)


def test_queries_keep_the_question_and_the_prefix_avoids_the_keyword(steerable, pf_set):
    assert 1 <= len(pf_set) <= 2 and pf_set.verifier == "proflingo-keyword-rate"
    for fp in pf_set:
        prefix, _, question = fp.key.partition(" simply answer: ")
        assert question == fp.meta["question"] and fp.meta["keyword"].casefold() not in prefix.casefold()
        assert fp.null_prob == 1.0 and len(fp.response_ids) <= 2


def test_base_matches_unrelated_does_not_and_records_say_there_is_no_bound(steerable, pf_set):
    own = verify(steerable, pf_set)  # intrinsic: the base IS the marked model
    assert own.verdict == "match" and own.matches == len(pf_set) and own.log10_p_value is None
    assert "no false-positive bound" in own.decision_rule and own.verifier == "proflingo-keyword-rate"
    other = verify(tiny_model(seed=1, init_std=0.5), pf_set)
    assert other.verdict == "no match" and other.log10_p_value is None


def test_bad_input_is_one_line(steerable, pf_set):
    with pytest.raises(ConfigError, match="key-length"):
        proflingo.proflingo_keys(steerable, 1, key_length=1, seed=0, batch_size=4)
    with pytest.raises(ConfigError, match="keys-file"):
        proflingo.proflingo_keys(steerable, 1, key_length=8, seed=0, batch_size=4, keys_file="k.txt")
    with pytest.raises(ModelprintError, match="only for queries proflingo optimised"):
        proflingo.proflingo_responses(steerable, ["x"], response_length=1, threshold=0.8, k=3, seed=0, batch_size=4)
    broken = copy.deepcopy(pf_set)
    broken.fingerprints[0].meta.pop("keyword")
    with pytest.raises(ConfigError, match="keyword"):
        verify(steerable, broken)
