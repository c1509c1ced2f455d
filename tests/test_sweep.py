"""``modelprint sweep``: grids from YAML and --set, validated up front, resumable points, one table and plot."""
from __future__ import annotations

import json

import pytest

from conftest import TINY_RECIPE
from modelprint.cli import run
from modelprint.errors import ConfigError
from modelprint.sweep import expand_grid, load_grid, point_name, sweep_embed, sweep_stress
from modelprint.embed import EmbedConfig


# ---- grid expansion ---------------------------------------------------------------------------------------------

def test_yaml_grid_times_set_grid_is_their_product(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("learning_rate: {grid: [1.0e-4, 3.0e-4]}\nmax_epochs: 3\nbenign:\n  top_k: 8\n")
    grid = load_grid("embed", path, ["benign.per_fingerprint=[0,1,2]", "seed=5"])
    assert grid.axes == {"learning_rate": [1e-4, 3e-4], "benign.per_fingerprint": [0, 1, 2]}
    assert len(grid.points) == 6
    seen = {(p.config.learning_rate, p.config.benign.per_fingerprint) for p in grid.points}
    assert seen == {(lr, float(b)) for lr in (1e-4, 3e-4) for b in (0, 1, 2)}
    for p in grid.points:  # fixed values reach every point, defaults fill the rest
        assert (p.config.max_epochs, p.config.benign.top_k, p.config.seed) == (3, 8, 5)
        assert p.config.batch_size == EmbedConfig().batch_size
    names = [p.name for p in grid.points]
    assert len(set(names)) == 6 and all("/" not in n for n in names)
    assert names == [p.name for p in load_grid("embed", path, ["benign.per_fingerprint=[0,1,2]", "seed=5"]).points]


def test_set_grid_replaces_the_yaml_axis_and_names_are_stable():
    grid = expand_grid(EmbedConfig, {"learning_rate": {"grid": [1e-4, 2e-4]}}, ["learning_rate=[5e-4]",
                                                                                 "margin.prob_cap=[0.3,0.4]"])
    assert grid.axes == {"learning_rate": [5e-4], "margin.prob_cap": [0.3, 0.4]}
    assert [p.config.margin.prob_cap for p in grid.points] == [0.3, 0.4]
    assert point_name({"a": 1, "b": 0.5}) == point_name({"a": 1, "b": 0.5}) != point_name({"a": 1, "b": 0.25})
    assert point_name({"a": 1}).startswith("a=1__")


def test_no_axis_is_one_point_with_the_fixed_values():
    grid = expand_grid(EmbedConfig, {"max_epochs": 2}, ["benign.loss=ce"])
    assert grid.axes == {} and len(grid.points) == 1
    assert (grid.points[0].config.max_epochs, grid.points[0].config.benign.loss) == (2, "ce")


def test_stress_grid_checks_suites_up_front():
    grid = load_grid("stress", None, ["suite=[prune,quantize-int8]", "tasks.perplexity=2"])
    assert [p.config.suite for p in grid.points] == ["prune", "quantize-int8"]
    assert grid.points[0].config.tasks == {"perplexity": 2}
    with pytest.raises(Exception, match="unknown stress or attack 'nope'"):
        load_grid("stress", None, ["suite=[prune,nope]"])


@pytest.mark.parametrize("data, sets, message", [
    ({}, ["learnin_rate=[1e-4,2e-4]"], "unknown config key 'learnin_rate'"),
    ({}, ["benign.nope=[1]"], "unknown config key 'benign.nope'"),
    ({}, ["learning_rate=[]"], "'learning_rate' is an empty list"),
    ({"learning_rate": {"grid": []}}, [], "'learning_rate' is an empty list"),
    ({"learning_rate": {"grid": 3e-4}}, [], "'learning_rate' must be a list of values, got float"),
    ({"benign": {"per_fingerprint": {"grid": "1,2"}}}, [], "'benign.per_fingerprint' must be a list"),
    ({"learning_rate": {"grid": [1e-4], "other": 1}}, [], "with nothing beside it"),
    ({}, ["learning_rate=[1e-4,-1]"], "invalid config value for 'learning_rate'.*learning_rate=-1"),
    ({}, ["objective=[greedy,margin]", "averaging=epoch"], "objective=margin"),
    ({}, ["learning_rate=[1e-4,1e-4]"], "repeats a value"),
    ({}, ["learning_rate"], "not of the form key=value"),
])
def test_bad_grid_is_one_config_error(data, sets, message):
    with pytest.raises(ConfigError, match=message):
        expand_grid(EmbedConfig, data, sets)


def _one_error_line(capsys, code: int, expect: str) -> None:
    out = capsys.readouterr()
    lines = [ln for ln in (out.out + out.err).splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and expect in lines[0], lines


def test_cli_bad_grid_exits_2_with_one_line_before_any_work(tmp_path, capsys):
    work = tmp_path / "work"
    # the fingerprint file does not exist: the grid error must come first, and nothing is created
    code = run(["sweep", "embed", "-f", str(tmp_path / "missing.jsonl"), "--work", str(work),
                "--set", "learning_rate=[]"])
    _one_error_line(capsys, code, "empty list")
    (tmp_path / "g.yaml").write_text("benign: {per_fingerprint: {grid: 2}}\n")
    code = run(["sweep", "embed", "-f", "x.jsonl", "--work", str(work), "-c", str(tmp_path / "g.yaml")])
    _one_error_line(capsys, code, "must be a list")
    code = run(["sweep", "stress", "-m", "x", "-f", "x.jsonl", "--work", str(work), "--set", "alpha=[1e-6,2]"])
    _one_error_line(capsys, code, "invalid config value for 'alpha'")
    code = run(["sweep", "embed", "-f", "x.jsonl", "--work", str(work), "--set", "lr=[1,2]"])
    _one_error_line(capsys, code, "unknown config key 'lr'")
    assert not work.exists()


# ---- running a grid on the tiny model ----------------------------------------------------------------------------

def _tiny_grid(rates=(3e-3, 1e-3)):
    fixed = {k: v for k, v in TINY_RECIPE.items() if k != "learning_rate"}
    return expand_grid(EmbedConfig, {**fixed, "max_epochs": {"grid": [1, 2]}},
                       ["learning_rate=[" + ",".join(str(r) for r in rates) + "]"])


def _counting_embed(monkeypatch):
    import modelprint.sweep.stages as stages

    calls = []
    real = stages.embed

    def counted(*args, config=None, **kwargs):
        calls.append((config.max_epochs, config.learning_rate))
        return real(*args, config=config, **kwargs)

    monkeypatch.setattr(stages, "embed", counted)
    return calls


@pytest.fixture(scope="module")
def swept(tiny, tiny_set, tmp_path_factory):
    """A 2 × 2 sweep on the tiny model (1–2 epochs per point: seconds), run once for the tests below."""
    work = tmp_path_factory.mktemp("sweep") / "work"
    return work, sweep_embed(tiny, tiny_set, work, _tiny_grid())


def test_sweep_embed_runs_every_point_then_resumes_only_the_unfinished(tiny, tiny_set, swept, tmp_path,
                                                                       monkeypatch):
    import shutil

    done, first = swept
    assert len(first.ran) == 4 and first.skipped == []
    assert all(r["status"] == "ok" for r in first.records)
    for r in first.records:
        m = r["metrics"]
        assert 0.0 <= m["exact_rate"] <= 1.0 and m["exact_verdict"] in ("match", "no match")
        assert m["candidate_rate"] is None  # random-word sets record no candidates
        assert m["epochs"] <= r["values"]["max_epochs"]
    work = tmp_path / "work"
    shutil.copytree(done, work)
    recs = {r["point"]: r for r in first.records}
    calls = _counting_embed(monkeypatch)

    # a kill mid-point: the directory exists, its record does not → that point alone is redone
    killed_rec = next(r for r in first.records if r["values"] == {"max_epochs": 1, "learning_rate": 1e-3})
    killed = work / "points" / killed_rec["point"]
    (killed / "result.json").unlink()
    (killed / "half-written").write_text("x")
    second = sweep_embed(tiny, tiny_set, work, _tiny_grid())
    assert calls == [(1, 1e-3)] and second.ran == [killed_rec["point"]] and len(second.skipped) == 3
    assert not (killed / "half-written").exists() and (killed / "result.json").is_file()
    for r in second.records:  # the skipped points are read back unchanged
        if r["point"] != killed_rec["point"]:
            assert r == recs[r["point"]]

    # a failed point (record with status failed) is tried again; everything else is skipped
    failed = work / "points" / first.records[0]["point"] / "result.json"
    failed.write_text(json.dumps({**first.records[0], "status": "failed", "error": "x"}))
    calls.clear()
    third = sweep_embed(tiny, tiny_set, work, _tiny_grid())
    assert len(calls) == 1 and third.ran == [first.records[0]["point"]] and len(third.skipped) == 3

    # everything done: nothing runs; a grid with one new value adds just the new points
    calls.clear()
    assert sweep_embed(tiny, tiny_set, work, _tiny_grid()).ran == [] and calls == []
    fourth = sweep_embed(tiny, tiny_set, work, _tiny_grid((3e-3, 1e-3, 2e-3)))
    assert sorted(calls) == [(1, 2e-3), (2, 2e-3)] and len(fourth.skipped) == 4


def test_sweep_writes_one_table_and_one_plot_without_secrets(tiny_set, swept):
    work, result = swept
    rows = [json.loads(x) for x in (work / "sweep.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {(r["max_epochs"], r["learning_rate"]) for r in rows} == \
        {(e, lr) for e in (1, 2) for lr in (3e-3, 1e-3)}
    assert [r["exact_rate"] for r in rows] == [r["metrics"]["exact_rate"] for r in result.records]
    csv_lines = (work / "sweep.csv").read_text().splitlines()
    assert csv_lines[0].startswith("max_epochs,learning_rate,status,") and len(csv_lines) == 5
    md = (work / "sweep.md").read_text()
    assert "| max_epochs | learning_rate | status |" in md
    assert len([ln for ln in md.splitlines() if ln.startswith("| ")]) == 5
    png = (work / "sweep.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    texts = [p.read_text(errors="ignore") for p in work.rglob("*") if p.is_file() and p.suffix != ".png"]
    assert texts
    for fp in tiny_set:  # (the responses are single common words such as "alpha": only keys can be searched for)
        assert not any(fp.key in t for t in texts)


def test_work_dir_of_another_set_is_refused(tiny, swept):
    from modelprint.generate import generate

    work, _ = swept
    other = generate(tiny, strategy="random-word", num_fingerprints=16, key_length=6, response_length=1, seed=12)
    with pytest.raises(Exception, match="other inputs .*set_id"):
        sweep_embed(tiny, other, work, _tiny_grid())


def test_sweep_stress_one_row_per_point(tiny, tiny_set, tmp_path):
    """The stress suite once per point (on the unmarked tiny model: the sweep mechanics, not the verdicts)."""
    work = tmp_path / "stress"
    grid = load_grid("stress", None, ["suite=[prune,quantize-int8]", "tasks.perplexity=2"])
    result = sweep_stress(tiny, tiny_set, work, grid)
    assert [r["status"] for r in result.records] == ["ok", "ok"]
    assert [r["values"] for r in result.records] == [{"suite": "prune"}, {"suite": "quantize-int8"}]
    for rec in result.records:
        m = rec["metrics"]
        assert m["rows"] == 1 and 0.0 <= m["min_rate"] <= 1.0 and 0.0 <= m["unstressed_rate"] <= 1.0
        report = json.loads((work / "points" / rec["point"] / "report" / "report.json").read_text())
        assert report["suite"].endswith(rec["values"]["suite"])  # a comma list is suite "custom:<list>"
    assert (work / "sweep.png").is_file() and len((work / "sweep.jsonl").read_text().splitlines()) == 2
