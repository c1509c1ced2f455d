"""False positives against a real unrelated model (issue 14): fresh secret sets never convict the unmarked base.

The SmolLM2 part of ``benchmarks/false_positives.py`` at a small size: a Perinucleus and a random-word set of 32
keys, each made with an OS-random secret from SmolLM2-135M, verified on the base model itself (which was never
trained on them) in exact and candidate mode. No verdict may be ``match``, and each row's match count must be
plausible under the per-key bound verify used (its exact Poisson-binomial tail, the row's p-value, above 1e-4),
i.e. the base model matches about as often as the bound allows and no more. The fast tests pin the bound
extraction and the refusal rows on a tiny model.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

TOLERANCE = 1e-4  # a row fails when its matches are this unlikely under the bound (a true-null flake rate ≤ 1e-4)


def _bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "false_positives.py"
    spec = importlib.util.spec_from_file_location("false_positives_bench", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


fpb = _bench()


def _record(null_probs: str, mode: str = "exact", keys=(0, 1, 2), statistic=None):
    return SimpleNamespace(null_probs=null_probs, match_mode=mode, keys_spent=list(keys), statistic=statistic or {})


def _fs(bounds, candidates=None):
    from modelprint.fingerprints import Fingerprint, FingerprintSet

    fps = [Fingerprint(index=i, key=f"k{i}", response="r", response_ids=[5], null_prob=b,
                       meta={"candidates": candidates} if candidates else {}) for i, b in enumerate(bounds)]
    return FingerprintSet(strategy="test", params={}, seed=0, model_source="", model_hash="", tokenizer_hash="",
                          fingerprints=fps)


def test_bound_used_reads_the_record():
    fs = _fs([0.1, 0.2, 0.4])
    same = fpb.bound_used(_record("min 0.333, max 0.333 (floor 0.0001)"), fs)
    assert (same.mean, same.max) == (0.333, 0.333)
    # per-key values inside the record's [min, max]: the mean is the set's numbers clamped into that range
    varied = fpb.bound_used(_record("min 0.15, max 0.3 (floor 0.0001)"), fs)
    assert varied.max == 0.3 and varied.mean == pytest.approx((0.15 + 0.2 + 0.3) / 3)
    pool = fpb.bound_used(_record("one shared response, pool 1e2.0", statistic={"log10_pool": 3.0}), fs)
    assert pool.mean == pool.max == pytest.approx(1e-3)
    richer = fpb.bound_used(_record("min 0.1, max 0.4", statistic={"null_bounds": [0.1, 0.2, 0.4]}), fs)
    assert richer.mean == pytest.approx(0.7 / 3) and richer.max == 0.4 and richer.source == "record per-key"
    assert fpb.bound_used(_record("something else"), fs).mean is None


def test_measure_rows_and_refusals(tiny):
    """A decided row carries n, matches and the bound; a mode verify refuses is a row, not a crash."""
    from modelprint.generate import generate

    fs = generate(tiny, strategy="random-word", num_fingerprints=8, seed=3)
    row = fpb.measure("tiny", tiny, fs, "exact", strategy="random-word", rep=0, alpha=0.01)
    assert row.verdict in ("match", "no match") and row.n_asked == 8 and row.bound_max is not None
    assert row.rate == row.matches / 8 and row.p_value is not None
    refused = fpb.measure("tiny", tiny, fs, "candidate", strategy="random-word", rep=0, alpha=0.01)
    assert refused.verdict == "refused" and "candidates" in refused.note and refused.n_asked is None
    report = fpb.summarize([row, refused], fpb.Options(n=8))
    assert report["headline"]["refused"] == 1 and report["headline"]["verdicts"] == 1


def test_secret_seed_options_are_fresh():
    a, b = fpb.secret_seed_options(), fpb.secret_seed_options()
    assert a == b == {} or a["seed"] != b["seed"]


@pytest.mark.slow
def test_unmarked_smollm2_is_never_convicted(real_model):
    report = fpb.run(real_model, fpb.Options(n=32, strategies=("perinucleus", "random-word"), suspects=("base",),
                                             modes=("exact", "candidate")), say=lambda _: None)
    rows = {(r["strategy"], r["mode"]): r for r in report["rows"]}
    assert report["headline"]["false_matches"] == 0 and report["headline"]["errors"] == 0
    assert rows[("random-word", "candidate")]["verdict"] == "refused"  # no candidates recorded: refused, as a row
    decided = [r for r in report["rows"] if r["verdict"] != "refused"]
    assert {(r["strategy"], r["mode"]) for r in decided} == {("perinucleus", "exact"), ("perinucleus", "candidate"),
                                                             ("random-word", "exact")}
    for r in decided:
        assert r["verdict"] == "no match" and r["n_asked"] == 32
        assert r["p_value"] > TOLERANCE, (r["strategy"], r["mode"], r["matches"], r["bound_mean"])
    # candidate ranking on the base: about 1/3 of keys by chance (the bound is exactly 1/k), never far above it
    cand = rows[("perinucleus", "candidate")]
    assert cand["bound_mean"] == pytest.approx(1 / 3, rel=0.01) and cand["rate"] <= 0.65


def test_bound_used_prefers_the_named_comparison():
    """When the summary names the comparison and the set records bounds per comparison, those give the mean."""
    fs = _fs([0.01, 0.01, 0.01])
    for fp, b in zip(fs, (0.02, 0.05, 0.2)):
        fp.meta["bounds"] = {"text-prefix": b, "text-exact": 0.01}
    got = fpb.bound_used(_record("min 0.02, max 0.2 (text-prefix; floor 0.0001)", mode="prefix"), fs)
    assert got.max == 0.2 and got.mean == pytest.approx(0.27 / 3)
