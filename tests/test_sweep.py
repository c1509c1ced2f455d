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

def _tiny_grid():
    fixed = {k: v for k, v in TINY_RECIPE.items() if k != "learning_rate"}
    return expand_grid(EmbedConfig, {**fixed, "max_epochs": {"grid": [1, 40]}}, ["learning_rate=[3e-3,1e-3]"])


def _counting_embed(monkeypatch):
    import modelprint.sweep.stages as stages

    calls = []
    real = stages.embed

    def counted(*args, config=None, **kwargs):
        calls.append((config.max_epochs, config.learning_rate))
        return real(*args, config=config, **kwargs)

    monkeypatch.setattr(stages, "embed", counted)
    return calls


def test_sweep_embed_runs_every_point_then_resumes_only_the_unfinished(tiny, tiny_set, tmp_path, monkeypatch):
    work = tmp_path / "sweep"
    grid = _tiny_grid()
    calls = _counting_embed(monkeypatch)
    first = sweep_embed(tiny, tiny_set, work, grid)
    assert len(calls) == 4 and len(first.ran) == 4 and first.skipped == []
    recs = {r["point"]: r for r in first.records}
    assert all(r["status"] == "ok" for r in recs.values())
    long_run = next(r for r in first.records if r["values"] == {"max_epochs": 40, "learning_rate": 3e-3})
    one_epoch = next(r for r in first.records if r["values"] == {"max_epochs": 1, "learning_rate": 1e-3})
    assert long_run["metrics"]["exact_rate"] >= 0.9 and long_run["metrics"]["exact_verdict"] == "match"
    assert one_epoch["metrics"]["exact_rate"] < long_run["metrics"]["exact_rate"]  # the grid changes the outcome
    assert long_run["metrics"]["candidate_rate"] is None  # random-word sets record no candidates

    # a kill mid-point: the directory exists, its record does not → that point alone is redone
    killed = work / "points" / one_epoch["point"]
    (killed / "result.json").unlink()
    (killed / "half-written").write_text("x")
    calls.clear()
    second = sweep_embed(tiny, tiny_set, work, grid)
    assert calls == [(1, 1e-3)] and second.ran == [one_epoch["point"]] and len(second.skipped) == 3
    assert not (killed / "half-written").exists() and (killed / "result.json").is_file()
    for r in second.records:  # the skipped points are read back unchanged
        if r["point"] != one_epoch["point"]:
            assert r == recs[r["point"]]

    # everything done: nothing runs
    calls.clear()
    third = sweep_embed(tiny, tiny_set, work, grid)
    assert calls == [] and third.ran == [] and len(third.skipped) == 4

    # a grid with one new value adds just the new points
    calls.clear()
    bigger = expand_grid(EmbedConfig, {**{k: v for k, v in TINY_RECIPE.items() if k != "learning_rate"},
                                       "max_epochs": {"grid": [1, 40]}}, ["learning_rate=[3e-3,1e-3,2e-3]"])
    fourth = sweep_embed(tiny, tiny_set, work, bigger)
    assert sorted(calls) == [(1, 2e-3), (40, 2e-3)] and len(fourth.skipped) == 4


def test_sweep_writes_one_table_and_one_plot_without_secrets(tiny, tiny_set, tmp_path):
    work = tmp_path / "sweep"
    result = sweep_embed(tiny, tiny_set, work, _tiny_grid())
    lines = (work / "sweep.jsonl").read_text().splitlines()
    rows = [json.loads(x) for x in lines]
    assert len(rows) == 4 and {(r["max_epochs"], r["learning_rate"]) for r in rows} == \
        {(e, lr) for e in (1, 40) for lr in (3e-3, 1e-3)}
    csv_lines = (work / "sweep.csv").read_text().splitlines()
    assert csv_lines[0].startswith("max_epochs,learning_rate,status") and len(csv_lines) == 5
    md = (work / "sweep.md").read_text()
    assert "| max_epochs | learning_rate | status |" in md and md.count("\n| ") >= 5
    png = (work / "sweep.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert len(result.records) == 4
    texts = [p.read_text(errors="ignore") for p in work.rglob("*") if p.is_file() and p.suffix != ".png"]
    for fp in tiny_set:
        assert not any(fp.key in t or fp.response in t for t in texts)
    assert not any(str(tiny_set.seed) in t.split("seed")[0] for t in texts if "set_seed" in t)


def test_work_dir_of_another_set_is_refused(tiny, tiny_set, tmp_path):
    from modelprint.generate import generate

    work = tmp_path / "sweep"
    grid = expand_grid(EmbedConfig, {**TINY_RECIPE, "max_epochs": 1}, [])
    sweep_embed(tiny, tiny_set, work, grid)
    other = generate(tiny, strategy="random-word", num_fingerprints=16, key_length=6, response_length=1, seed=12)
    with pytest.raises(Exception, match="other inputs .*set_id"):
        sweep_embed(tiny, other, work, grid)


def test_sweep_stress_one_row_per_point(tiny, tiny_marked, tiny_set, tmp_path):
    work = tmp_path / "stress"
    grid = load_grid("stress", None, ["suite=[prune,quantize-int8]", "tasks.perplexity=2"])
    result = sweep_stress(tiny_marked, tiny_set, work, grid, base=tiny)
    assert [r["status"] for r in result.records] == ["ok", "ok"]
    for rec in result.records:
        m = rec["metrics"]
        assert m["rows"] == 1 and 0.0 <= m["min_rate"] <= 1.0 and m["unstressed_rate"] >= 0.9
        assert (work / "points" / rec["point"] / "report" / "report.json").is_file()
    assert (work / "sweep.png").is_file() and len((work / "sweep.jsonl").read_text().splitlines()) == 2
