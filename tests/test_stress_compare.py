"""stress --schemes: every scheme generated, embedded and stressed side by side, resumable (tiny models, seconds)."""
from __future__ import annotations

import json
import stat
import subprocess
import sys

import pytest

from modelprint.errors import ModelprintError
from modelprint.stress.compare import compare_schemes, parse_schemes, parse_tasks
from modelprint.stress.compare_report import format_comparison

SUITE = "quantize-int8,suppress-topk,system-prompt"
TASKS = {"perplexity": 4, "piqa": 2, "answer-agreement": 2}
TINY = ["objective=greedy", "delta_density=null", "learning_rate=3e-3", "max_epochs=40", "batch_size=4",
        "freeze_embeddings=false", "weight_averaging=0.0",
        "benign.per_fingerprint=0", "augmentation.copies=0", "utility.enabled=false"]
OPTIONS = dict(num_fingerprints=16, suite=SUITE, tasks=TASKS, embed_overrides=TINY, alpha=1e-3, progress=False,
               fast=True)


@pytest.fixture(scope="module")
def compared(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp") / "cmp"
    # compare draws each set's secret from the OS; here it is pinned, because on the tiny model some secrets write
    # fewer usable distinct keys than asked (an honest error, but not what this test is about)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("modelprint.seeds.fresh_seed", lambda: 0)
        return out, compare_schemes(["perinucleus", "random-word"], model=tiny, out=out, **OPTIONS)


def test_one_row_per_scheme_one_cell_per_column(compared):
    out, result = compared
    data = json.loads((out / "comparison.json").read_text())
    assert [r["scheme"] for r in data["rows"]] == ["perinucleus", "random-word"]
    ids = [c["id"] for c in data["columns"]]
    assert ids == ["control", "none", "quantize-int8", "suppress-topk", "system-prompt"]
    for row in data["rows"]:
        assert row["status"] == "ok", row.get("error")
        assert set(row["cells"]) == set(ids)
        none, control = row["cells"]["none"], row["cells"]["control"]
        assert none["verdict"] == "match" and none["rate"] >= 0.9  # embedded with the tiny recipe
        assert control["verdict"] == "no match" and control["model"] == "base"  # the unmarked base does not verify
        assert row["cells"]["suppress-topk"]["verdict"] == "no match"
        assert abs(row["cells"]["quantize-int8"]["asr"] + row["cells"]["quantize-int8"]["rate"] - 1) < 1e-9
        assert row["cells"]["system-prompt"]["utility"] is None  # rendering only: not measured
        assert 0 < none["utility"] < 2  # embedding cost vs the base
        assert stat.S_IMODE((out / row["scheme"] / "fingerprints.jsonl").stat().st_mode) == 0o600
        assert (out / row["scheme"] / "model" / "config.json").is_file()
        assert (out / row["scheme"] / "report" / "report.json").is_file()
    for name in ("leaderboard.png", "comparison.html"):
        assert (out / name).stat().st_size > 0
    text = (out / "comparison.json").read_text() + (out / "comparison.html").read_text()
    for scheme in ("perinucleus", "random-word"):  # no secrets in the shared files
        from modelprint.fingerprints import load_fingerprints

        for fp in load_fingerprints(out / scheme / "fingerprints.jsonl"):
            assert fp.key not in text
    table = format_comparison(result.data)
    assert table.splitlines()[2].startswith("perinucleus") and "/" in table.splitlines()[2]


def test_rerun_resumes_without_re_embedding(compared, tiny, monkeypatch):
    out, first = compared
    import modelprint.embed
    import modelprint.stress.compare as compare

    def boom(*a, **k):
        raise AssertionError("re-embedded a finished scheme")

    monkeypatch.setattr(modelprint.embed, "embed", boom)
    monkeypatch.setattr(compare, "stress", boom)
    again = compare_schemes(["random-word", "perinucleus"], model=tiny, out=out, **OPTIONS)
    by = {r["scheme"]: r for r in again.rows}
    assert by["perinucleus"]["cells"] == {r["scheme"]: r for r in first.rows}["perinucleus"]["cells"]
    with pytest.raises(ModelprintError, match="other settings"):
        compare_schemes(["perinucleus"], model=tiny, out=out, **{**OPTIONS, "num_fingerprints": 17})


def test_intrinsic_scheme_and_failed_scheme_is_a_row_and_is_retried(tiny, tmp_path, monkeypatch, request):
    """trains=False: nothing embedded, the control needs an unrelated model; a failure is a row, retried next run."""
    import dataclasses

    from modelprint.generate import STRATEGIES, get_strategy

    rw = get_strategy("random-word")
    broken = {"now": True}

    def keys(*a, **k):
        if broken["now"]:
            raise RuntimeError("boom")
        return rw.keys(*a, **k)

    for name, changes in (("test-intrinsic", {}), ("test-flaky", {"keys": keys})):
        STRATEGIES.add(name, dataclasses.replace(rw, name=name, trains=False, **changes), source="a test")
        request.addfinalizer(lambda name=name: STRATEGIES.remove(name))
    out = tmp_path / "c"
    opts = {**OPTIONS, "suite": "prune", "tasks": {"perplexity": 2}}
    res = compare_schemes(["test-flaky", "test-intrinsic"], model=tiny, out=out, **opts)
    by = {r["scheme"]: r for r in res.rows}
    assert by["test-flaky"]["status"] == "failed" and "boom" in by["test-flaky"]["error"]
    assert by["test-intrinsic"]["status"] == "ok" and not (out / "test-intrinsic" / "model").exists()
    assert by["test-intrinsic"]["cells"]["control"]["status"] == "skipped"
    assert by["test-intrinsic"]["cells"]["none"]["utility"] == 1.0
    text = format_comparison(res.data)
    assert "failed: RuntimeError: boom" in text and "test-intrinsic: control skipped" in text
    broken["now"] = False
    res = compare_schemes(["test-flaky", "test-intrinsic"], model=tiny, out=out, **opts)
    assert all(r["status"] == "ok" for r in res.rows)


def test_bad_input_before_any_work(tiny, tmp_path, monkeypatch):
    import modelprint.stress.compare as compare

    monkeypatch.setattr(compare, "load_model", lambda *a, **k: pytest.fail("loaded a model before validating"))
    for schemes, match in ((["perinucleus", "nope"], "unknown strategy 'nope'"), ([], "no schemes"),
                           (["english", "english"], "twice")):
        with pytest.raises(ModelprintError, match=match):
            compare_schemes(schemes, model=tiny, out=tmp_path / "x", **OPTIONS)
    with pytest.raises(ModelprintError, match="unknown config key"):
        compare_schemes(["english"], model=tiny, out=tmp_path / "x", **{**OPTIONS, "embed_overrides": ["nope=1"]})
    with pytest.raises(ModelprintError, match="unknown evaluation task"):
        compare_schemes(["english"], model=tiny, out=tmp_path / "x", **{**OPTIONS, "tasks": {"nope": 2}})
    with pytest.raises(ModelprintError, match="unknown stress"):
        compare_schemes(["english"], model=tiny, out=tmp_path / "x", **{**OPTIONS, "suite": "nope"})
    assert not (tmp_path / "x").exists()
    assert parse_tasks("perplexity=16, piqa=8") == {"perplexity": 16, "piqa": 8}
    with pytest.raises(ModelprintError, match="task=N"):
        parse_tasks("perplexity")
    assert parse_schemes(["perinucleus", " rofl:4"], 16) == {"perinucleus": 16, "rofl": 4}
    for bad, match in ((["rofl:x"], "name:N"), (["rofl:0"], "≥ 1"), (["a", "a:3"], "twice")):
        with pytest.raises(ModelprintError, match=match):
            parse_schemes(bad, 16)


def test_cli_bad_scheme_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "modelprint.cli", "stress", "--schemes", "perinucleus,nope",
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown strategy 'nope'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_equal_key_budget_gives_each_scheme_the_keys_its_queries_afford(tiny, tmp_path, request, monkeypatch):
    """--queries Q: a scheme that costs 3 queries per key gets a third of the keys; both spend Q queries."""
    import dataclasses

    from modelprint.generate import STRATEGIES, get_strategy
    from modelprint.stress.compare import key_budget

    rw = get_strategy("random-word")
    for name, cost in (("test-one-query", 1), ("test-three-queries", 3)):
        STRATEGIES.add(name, dataclasses.replace(rw, name=name, trains=False, queries_per_key=cost), source="a test")
        request.addfinalizer(lambda name=name: STRATEGIES.remove(name))
    assert [key_budget(get_strategy("test-three-queries"), q) for q in (3, 11, 12)] == [1, 3, 4]
    with pytest.raises(ModelprintError, match="affords no key of 'test-three-queries'"):
        key_budget(get_strategy("test-three-queries"), 2)
    monkeypatch.setattr("modelprint.seeds.fresh_seed", lambda: 0)
    out = tmp_path / "c"
    opts = {**OPTIONS, "suite": "prune", "tasks": {"perplexity": 2}, "queries": 12}
    res = compare_schemes(["test-one-query", "test-three-queries"], model=tiny, out=out, **opts)
    by = {r["scheme"]: r for r in res.rows}
    assert all(r["status"] == "ok" for r in res.rows), [r.get("error") for r in res.rows]
    assert (by["test-one-query"]["n_fingerprints"], by["test-three-queries"]["n_fingerprints"]) == (12, 4)
    assert [by[s]["queries_per_key"] for s in ("test-one-query", "test-three-queries")] == [1, 3]
    assert by["test-one-query"]["queries"] == by["test-three-queries"]["queries"] == 12
    assert by["test-three-queries"]["cells"]["none"]["n"] == 4  # the stress rows asked the budgeted keys
    assert res.data["queries"] == 12 and res.data["n"] is None
    table = format_comparison(res.data)
    assert "equal key budget: 12 queries per scheme" in table
    assert any(line.startswith("test-three-queries") and "  4   12 " in line for line in table.splitlines())
    assert "equal key budget of 12 queries" in (out / "comparison.html").read_text()
    with pytest.raises(ModelprintError, match="other settings \\(queries"):
        compare_schemes(["test-one-query"], model=tiny, out=out, **{**opts, "queries": 6})
    with pytest.raises(ModelprintError, match="drop the name:N"):
        compare_schemes(["test-one-query:3"], model=tiny, out=tmp_path / "d", **opts)


def test_strategy_queries_per_key_must_be_positive():
    from modelprint.generate import STRATEGIES, get_strategy

    rw = get_strategy("random-word")
    assert rw.queries_per_key == 1
    with pytest.raises(ValueError, match="queries_per_key"):
        STRATEGIES.register("test-bad-cost", source="a test", keys=rw.keys, description="x",
                            queries_per_key=0)(rw.responses)
    assert "test-bad-cost" not in STRATEGIES.names()
