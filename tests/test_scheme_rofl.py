"""RoFL-style intrinsic fingerprints and the GCG optimiser on tiny models (seconds)."""
from __future__ import annotations

import functools

import pytest

from modelprint.errors import ConfigError, ModelprintError
from modelprint.generate import STRATEGIES, generate
from modelprint.wordlist import rng_for
from modelprint.prompts import encode_prompt
from modelprint.schemes import gcg, rofl
from modelprint.testing import tiny_model
from modelprint.verify import verify
from modelprint.verify.local import answer_keys

TEST_BUDGET = gcg.Budget(top_k=64, candidates=64, max_steps=40)


@pytest.fixture(scope="module")
def steerable():
    """A tiny model whose output depends enough on its input for GCG to steer it (larger init scale)."""
    return tiny_model(seed=0, init_std=0.5)


@pytest.fixture(scope="module")
def tiny_rofl():
    """rofl with a test budget and 2-token targets (a tiny random model cannot be steered to whole words)."""
    STRATEGIES.register("rofl-tiny", source=rofl.PAPER, description="test",
                        keys=functools.partial(rofl.rofl_keys, budget=TEST_BUDGET, target_tokens=2),
                        verifier="rofl-match-rate", trains=False)(rofl.rofl_responses)
    return "rofl-tiny"


def test_frame_splits_the_rendering_around_the_key(steerable):
    tok = steerable.tokenizer
    fr = gcg.frame(tok)
    ids = list(tok("the river flows", add_special_tokens=False)["input_ids"])
    assert encode_prompt(tok, "the river flows") == fr.prefix + ids + fr.suffix
    assert gcg.renders_as(tok, ids, fr)
    mask = gcg.roundtrip_tokens(tok)
    assert 0 < int(mask.sum()) < len(tok) and not any(mask[i] for i in tok.all_special_ids)


def test_gcg_finds_a_prompt_that_elicits_the_target(steerable):
    tok = steerable.tokenizer
    fr = gcg.frame(tok)
    target = list(tok("Paris", add_special_tokens=False)["input_ids"])[:1]
    init = list(tok("tell me about the quick brown fox and the lazy dog", add_special_tokens=False)["input_ids"])[:10]
    result = gcg.optimise(steerable, target, init, fr, TEST_BUDGET, rng_for(0, 1))
    assert result.elicits and len(result.prompt_ids) == 10
    assert gcg.optimise(steerable, target, init, fr, TEST_BUDGET, rng_for(0, 1)) == result  # seeded: deterministic
    text = tok.decode(result.prompt_ids)
    assert answer_keys(steerable, [text], len(target))[0] == target  # verify's own path


def test_generation_contract_and_verification(steerable, tiny_rofl):
    fs = generate(steerable, strategy=tiny_rofl, num_fingerprints=3, key_length=10, seed=0)
    assert len(fs) == 3 and fs.strategy == tiny_rofl
    assert all(f.null_prob == 1.0 and f.meta["gcg_steps"] >= 0 and len(f.response_ids) <= 2 for f in fs)
    assert len({f.key for f in fs}) == 3

    own = verify(steerable, fs)  # the base model IS the marked model
    assert own.verdict == "match" and own.matches == 3 and own.log10_p_value is None
    assert own.verifier == "rofl-match-rate" and "match rate" in own.decision_rule

    other = verify(tiny_model(seed=1, init_std=0.5), fs)  # unrelated: same tokenizer, other weights
    assert other.verdict == "no match" and other.matches == 0


def test_bad_input_is_one_line(steerable):
    with pytest.raises(ConfigError, match="key-length"):
        rofl.rofl_keys(steerable, 1, key_length=1, seed=0, batch_size=4)
    with pytest.raises(ConfigError, match="system-prompt"):
        rofl.rofl_responses(steerable, ["x"], response_length=1, threshold=0.8, k=3, seed=0, batch_size=4,
                            system_prompt="You are terse.")
    with pytest.raises(ModelprintError, match="only for prompts rofl optimised"):
        rofl.rofl_responses(steerable, ["not optimised"], response_length=1, threshold=0.8, k=3, seed=0, batch_size=4)
