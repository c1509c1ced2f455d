"""Chain & Hash (schemes/chain_hash.py): the hash chain, the proof of a pre-fixed set, embed, verify."""
from __future__ import annotations

import dataclasses

import pytest

from conftest import tiny_recipe
from modelprint.errors import ConfigError
from modelprint.generate import generate
from modelprint.schemes.chain_hash import (SECRET_ENV, ChainHashError, candidate_answers, candidate_questions, chain,
                                           prove_set)
from modelprint.verify import verify


@pytest.fixture(scope="module")
def ch_set(tiny):
    return generate(tiny, strategy="chain-hash", num_fingerprints=8, seed=5)


@pytest.fixture(scope="module")
def lists(tiny):
    return candidate_questions(), [word for word, _ in candidate_answers(tiny.tokenizer)]


def test_generation_contract(tiny, ch_set, lists, tmp_path):
    questions, answers = lists
    assert len(ch_set) == 8 and len({fp.key for fp in ch_set}) == 8
    assert all(fp.key in questions and fp.response.strip() in answers for fp in ch_set)
    assert all(fp.null_prob == pytest.approx(1 / len(answers)) for fp in ch_set)
    assert "secret" not in ch_set.params and all(len(fp.meta["secret"]) == 64 for fp in ch_set)
    again = generate(tiny, tmp_path / "ch.jsonl", strategy="chain-hash", num_fingerprints=8, seed=5)
    assert again.set_id == ch_set.set_id
    assert generate(tiny, strategy="chain-hash", num_fingerprints=8, seed=6).set_id != ch_set.set_id


def test_chain_is_bound_to_secret_and_lists(lists):
    questions, answers = lists
    secret = bytes(range(32))
    base = chain(secret, questions, answers, 20)
    assert len({q for q, _ in base}) == 20  # distinct questions
    assert chain(secret, questions, answers, 10) == base[:10]  # a prefix of the chain is the shorter chain
    assert chain(bytes(32), questions, answers, 20) != base
    assert chain(secret, questions, answers[:-1], 20) != base  # changing either list changes the pairs
    assert chain(secret, questions[:-1], answers, 20) != base
    assert len({q for q, _ in chain(secret, questions[:25], answers, 25)}) == 25  # re-hashing keeps them distinct


def test_proof_accepts_the_set_and_rejects_tampering(ch_set, lists):
    questions, answers = lists
    assert prove_set(ch_set, questions, answers) == ch_set.fingerprints[0].meta["commitment"]
    fps = list(ch_set.fingerprints)
    swapped = dataclasses.replace(fps[2], key=next(q for q in questions if q not in {fp.key for fp in fps}))
    with pytest.raises(ChainHashError, match="fingerprint 2"):
        prove_set(dataclasses.replace(ch_set, fingerprints=fps[:2] + [swapped] + fps[3:]), questions, answers)
    other = next(a for a in answers if a != fps[0].response.strip())
    with pytest.raises(ChainHashError, match="fingerprint 0"):
        prove_set(dataclasses.replace(ch_set, fingerprints=[dataclasses.replace(fps[0], response=other)] + fps[1:]),
                  questions, answers)
    with pytest.raises(ChainHashError, match="commitment"):
        prove_set(ch_set, questions, answers[::-1])
    forged = [dataclasses.replace(fp, meta={**fp.meta, "secret": "00" * 32}) for fp in fps]
    with pytest.raises(ChainHashError, match="commitment"):
        prove_set(dataclasses.replace(ch_set, fingerprints=forged), questions, answers)


def test_secret_from_the_environment(tiny, lists, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, "urandom")
    a = generate(tiny, strategy="chain-hash", num_fingerprints=6, seed=5)
    b = generate(tiny, strategy="chain-hash", num_fingerprints=6, seed=5)
    assert a.fingerprints[0].meta["secret"] != b.fingerprints[0].meta["secret"]
    assert prove_set(a, *lists) and prove_set(b, *lists)
    monkeypatch.setenv(SECRET_ENV, "ab" * 32)
    fixed = generate(tiny, strategy="chain-hash", num_fingerprints=6, seed=1)
    assert fixed.fingerprints[0].meta["secret"] == "ab" * 32
    monkeypatch.setenv(SECRET_ENV, "not-hex")
    with pytest.raises(ConfigError, match=SECRET_ENV):
        generate(tiny, strategy="chain-hash", num_fingerprints=2)


def test_embed_then_verify(tiny, ch_set):
    from modelprint.embed import embed

    marked = embed(tiny, ch_set, None, config=tiny_recipe()).model
    record = verify(marked, ch_set, alpha=1e-6)
    assert record.verifier == "match" and record.verdict == "match" and record.log10_p_value <= -6
    base = verify(tiny, ch_set, alpha=1e-6, sequential=False)
    assert base.verdict == "no match" and base.matches == 0


def test_bad_input(tiny, tmp_path):
    with pytest.raises(ConfigError, match="candidate questions"):
        generate(tiny, strategy="chain-hash", num_fingerprints=len(candidate_questions()) + 1)
    with pytest.raises(ConfigError, match="response-length"):
        generate(tiny, strategy="chain-hash", num_fingerprints=2, response_length=2)
    custom = tmp_path / "questions.txt"
    custom.write_text("What is red?\nWhat is blue?\nWhat is green?\n")
    assert {fp.key for fp in generate(tiny, strategy="chain-hash", num_fingerprints=3, keys_file=str(custom))} == {
        "What is red?", "What is blue?", "What is green?"}

