"""verify: the statistics, local verification, the sequential test, budgets, trace, bad input."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats as sstats
from conftest import StubSuspect, stub_set, tiny_recipe

from modelprint.errors import ConfigError, FingerprintFileError
from modelprint.models import LoadedModel
from modelprint.verify import plan_keys, verify, verify_sets
from modelprint.verify.stats import keys_needed, log10_tail, log_tail, sequential_decision, tail
from modelprint.verify.trace import holm_adjust, trace


def test_tail_matches_binomial_and_brute_force():
    assert tail([1 / 3] * 64, 30) == pytest.approx(sstats.binom.sf(29, 64, 1 / 3), rel=1e-9)
    rng = np.random.default_rng(0)
    p = rng.uniform(0.01, 0.6, size=9)
    for m in range(0, 10):  # brute force over all 2^9 outcomes
        total = 0.0
        for mask in range(2 ** 9):
            bits = [(mask >> i) & 1 for i in range(9)]
            if sum(bits) >= m:
                total += np.prod([pi if b else 1 - pi for pi, b in zip(p, bits)])
        assert tail(p, m) == pytest.approx(total, rel=1e-9, abs=1e-300)


def test_tail_is_stable_for_thousands_of_keys():
    value = log10_tail([0.2] * 3000, 2900)
    assert math.isfinite(value) and value < -1500
    assert log_tail([0.5] * 10, 0) == 0.0 and log_tail([0.5] * 10, 11) == -math.inf


def test_sequential_decisions():
    p = [1 / 3] * 64
    assert sequential_decision(p, 50, 50, 1e-6) == "match"
    assert sequential_decision(p, 40, 0, 1e-6) == "no match"
    assert sequential_decision(p, 10, 5, 1e-6) is None
    assert keys_needed(1 / 3, 1e-6) == 13


def test_plan_keys_seeded_and_budgeted(tiny_set):
    assert plan_keys(tiny_set, 5, 0) == plan_keys(tiny_set, 5, 0)
    assert plan_keys(tiny_set, 5, 0) != plan_keys(tiny_set, 5, 1)
    assert len(plan_keys(tiny_set, 5, 0)) == 5
    assert plan_keys(tiny_set, None, 0, prefer=[4, 3])[:2] == [4, 3]


def test_marked_model_matches_and_base_does_not(tiny, tiny_marked, tiny_set):
    hit = verify(tiny_marked, tiny_set, sequential=False)
    assert hit.verdict == "match" and hit.matches >= 14 and hit.log10_p_value < -6
    miss = verify(tiny, tiny_set)
    assert miss.verdict == "no match" and miss.matches <= 2
    text = json.dumps(hit.to_json())
    assert all(fp.key not in text for fp in tiny_set)


def test_sequential_stops_early(tiny_marked, tiny_set):
    early = verify(tiny_marked, tiny_set, batch_size=4, alpha=1e-3)
    assert early.verdict == "match" and early.stopped_early and early.n_asked < len(tiny_set)


def test_budget_limits_keys(tiny_marked, tiny_set):
    record = verify(tiny_marked, tiny_set, max_queries=6)
    assert record.n_asked <= 6 and record.n_planned == 6 and len(record.keys_spent) == record.n_asked
    # 6 keys at 1/|words| each are already conclusive for random-word responses
    assert record.verdict == "match"


def test_budget_too_small_to_decide_is_an_error(tiny):
    from modelprint.generate import generate

    fs = generate(tiny, num_fingerprints=20, key_length=16)  # Perinucleus: 1/3 per key
    with pytest.raises(ConfigError, match="5 keys cannot reach alpha=1e-06.*raise --max-queries"):
        verify(tiny, fs, max_queries=5)
    with pytest.raises(ConfigError, match="larger fingerprint set"):
        verify(tiny, fs.subset(range(8)))


def test_bad_arguments(tiny, tiny_set):
    with pytest.raises(ConfigError, match="alpha"):
        verify(tiny, tiny_set, alpha=0)
    with pytest.raises(ConfigError, match="match mode"):
        verify(tiny, tiny_set, match="fuzzy")
    with pytest.raises(ConfigError, match="max_queries"):
        verify(tiny, tiny_set, max_queries=0)


def test_other_tokenizer_is_refused(tiny_set):
    from modelprint.testing import tiny_model

    other = tiny_model(vocab_size=300)
    with pytest.raises(FingerprintFileError, match="another tokenizer"):
        verify(other, tiny_set)


def test_holm_adjustment():
    adjusted = holm_adjust({"a": -10.0, "b": -3.0, "c": -0.1})
    assert adjusted["a"] == pytest.approx(-10 + math.log10(3))
    assert adjusted["b"] == pytest.approx(-3 + math.log10(2))
    assert adjusted["c"] == pytest.approx(max(-0.1, adjusted["b"]))


def test_holm_lives_in_stats_and_trace_uses_it():
    from modelprint.verify import stats, trace as trace_module

    assert trace_module.holm_adjust is stats.holm_adjust


def test_verify_sets_holm_corrects_and_decides_at_adjusted_p():
    """α = 0.02, null 0.1, 20 keys: 6 matches is p ≈ 0.0113 (a match alone, not at Bonferroni's α/2)."""
    alpha = 0.02
    p6 = log10_tail([0.1] * 20, 6)
    assert math.log10(alpha / 2) < p6 <= math.log10(alpha)
    # one set all matched, one at 6/20: Holm's second step compares the latter with α itself → both match
    a, b = verify_sets(StubSuspect({"a": 20, "b": 6}), [stub_set("a"), stub_set("b")], alpha=alpha)
    assert (a.verdict, b.verdict) == ("match", "match")
    assert a.log10_adjusted_p_value == pytest.approx(a.log10_p_value + math.log10(2))
    assert b.log10_p_value == pytest.approx(p6) and b.log10_adjusted_p_value == pytest.approx(p6)
    assert a.family_size == b.family_size == 2 and a.alpha == b.alpha == alpha
    # two sets at 6/20: each alone is a match, together neither is (the uncorrected CLI said 'match' here)
    alone = verify_sets(StubSuspect({"b": 6}), [stub_set("b")], alpha=alpha)[0]
    assert alone.verdict == "match" and alone.family_size == 1 and alone.log10_adjusted_p_value == alone.log10_p_value
    both = verify_sets(StubSuspect({"b": 6, "c": 6}), [stub_set("b"), stub_set("c")], alpha=alpha)
    assert [r.verdict for r in both] == ["no match", "no match"]
    assert all(r.log10_adjusted_p_value == pytest.approx(p6 + math.log10(2)) for r in both)
    assert "Holm" in both[0].decision_rule and both[0].to_json()["family_size"] == 2


def test_verify_sets_checks_every_set_before_asking(tmp_path):
    good = stub_set("a").save(tmp_path / "a.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    suspect = StubSuspect({"a": 20})
    with pytest.raises(FingerprintFileError, match="empty"):
        verify_sets(suspect, [good, tmp_path / "empty.jsonl"])
    with pytest.raises(ConfigError, match="same set"):
        verify_sets(suspect, [good, stub_set("a")])
    with pytest.raises(ConfigError, match="batch size"):
        verify_sets(suspect, [good], batch_size=0)
    assert suspect.asked == 0


def test_trace_names_the_leaker(tiny, tiny_marked, tiny_set):
    from modelprint.generate import generate

    other = generate(tiny, strategy="random-word", num_fingerprints=16, key_length=6, seed=99)
    record = trace(tiny_marked, {"acme": tiny_set, "globex": other})
    assert record.licensees == ["acme"]
    assert trace(tiny, {"acme": tiny_set, "globex": other}).licensees == []


def _perinucleus_copy(tiny, seed: int, where):
    """A licensee's copy: Perinucleus responses to random-word keys (the tiny model writes poor keys)."""
    from modelprint.embed import embed
    from modelprint.generate import generate
    from modelprint.wordlist import random_words

    keys = where / f"keys-{seed}.txt"
    keys.write_text("\n".join(random_words(seed, i, 6) for i in range(32)) + "\n")
    fs = generate(tiny, strategy="custom", keys_file=str(keys), num_fingerprints=32, seed=seed)
    # like the real recipe: gentle, embeddings frozen, so each copy's change is small and averages linearly
    return fs, embed(tiny, fs, None, config=tiny_recipe(learning_rate=1e-3, freeze_embeddings=True)).model


def test_candidate_match_traces_both_parents_of_an_average(tiny, tmp_path):
    """A 50/50 average halves each copy's fingerprint; ranking our pick among the candidates still finds both."""
    import copy

    import torch

    (acme_set, acme), (globex_set, globex) = _perinucleus_copy(tiny, 21, tmp_path), _perinucleus_copy(tiny, 22, tmp_path)
    model = copy.deepcopy(acme.model)
    with torch.no_grad():
        for p, q in zip(model.parameters(), globex.model.parameters()):
            p.mul_(0.5).add_(q, alpha=0.5)
    average = LoadedModel(model, tiny.tokenizer, "average", None)
    sets = {"acme": acme_set, "globex": globex_set}
    record = trace(average, sets, alpha=1e-3)
    assert sorted(record.licensees) == ["acme", "globex"], record.results
    assert {r["match_mode"] for r in record.results.values()} == {"candidate"}
    assert trace(tiny, sets, alpha=1e-3).licensees == []
    assert trace(acme, sets, alpha=1e-3).licensees == ["acme"]


def test_candidate_match_needs_candidates_and_weights(tiny, tiny_set):
    with pytest.raises(ConfigError, match="records no Perinucleus candidates"):
        verify(tiny, tiny_set, match="candidate")
    assert verify(tiny, tiny_set).match_mode == "exact"  # auto falls back for sets without candidates


def test_missing_and_malformed_files(tiny, tmp_path):
    with pytest.raises(FingerprintFileError, match="does not exist"):
        verify(tiny, tmp_path / "none.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(FingerprintFileError, match="not valid JSON"):
        verify(tiny, bad)


def test_tampered_file_is_detected(tiny_set, tmp_path):
    path = tmp_path / "fp.jsonl"
    tiny_set.save(path)
    lines = path.read_text().splitlines()
    record = json.loads(lines[1])
    record["response_ids"] = [1]
    lines[1] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n")
    from modelprint.fingerprints import load_fingerprints

    with pytest.raises(FingerprintFileError, match="modified"):
        load_fingerprints(path)


def test_cli_exit_codes(tmp_path):
    missing = subprocess.run([sys.executable, "-m", "modelprint.cli", "verify", "--model", "./nowhere",
                              "--fingerprints", str(tmp_path / "x.jsonl")], capture_output=True, text=True)
    assert missing.returncode == 2 and "error:" in missing.stderr and "Traceback" not in missing.stderr
    both = subprocess.run([sys.executable, "-m", "modelprint.cli", "verify", "--fingerprints", "x"],
                          capture_output=True, text=True)
    assert both.returncode == 2 and "exactly one of --model" in both.stderr


@pytest.mark.slow
def test_real_base_model_does_not_match_its_own_perinucleus_set(real_model):
    from modelprint.generate import generate

    fs = generate(real_model, num_fingerprints=32, seed=5)
    record = verify(real_model, fs, sequential=False, match="exact")
    assert record.verdict == "no match" and record.matches <= 2  # responses lie outside the nucleus by design
    ranked = verify(real_model, fs, sequential=False)  # auto → candidate: the base ranks our pick first ~1/k
    assert ranked.match_mode == "candidate" and ranked.verdict == "no match" and ranked.matches < 24
