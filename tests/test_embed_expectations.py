"""`modelprint embed` compares its run with the benchmark's distribution over seeds for the same recipe only."""
from __future__ import annotations

import json

import pytest
from conftest import TINY_RECIPE

from modelprint.config import load_config
from modelprint.embed import EmbedConfig
from modelprint.embed import expectations as ex
from modelprint.generate import generate


def _expectation(model: str, n: int, overrides: list[str], ppl_mean: float = 0.031) -> ex.Expectation:
    figures = {"perplexity_change": ex.FigureSummary(mean=ppl_mean, sd=0.004, worst=0.037, runs=5),
               "retention": ex.FigureSummary(mean=1.0, sd=0.0, worst=1.0, runs=5)}
    return ex.Expectation(model=model, n=n, variant="v", figures=figures,
                          recipe=ex.recipe_key(load_config(EmbedConfig, None, overrides)))


def test_store_replaces_same_point_and_lookup_needs_the_same_recipe(tmp_path):
    path = tmp_path / "exp.json"
    ex.store_expectation(_expectation("m", 64, []), path)
    ex.store_expectation(_expectation("m", 64, [], ppl_mean=0.05), path)  # same point: replaced, not appended
    ex.store_expectation(_expectation("m", 256, []), path)
    ex.store_expectation(_expectation("m", 64, ["objective=greedy"]), path)
    assert len(ex.load_expectations(path)) == 3
    default = load_config(EmbedConfig, None, ["seed=7"])  # the seed does not change what is expected
    assert ex.expectation_for("m", 64, default, path).figures["perplexity_change"].mean == 0.05
    assert ex.expectation_for("m", 200, default, path).n == 256  # nearest measured size
    assert ex.expectation_for("m", 64, load_config(EmbedConfig, None, ["objective=greedy"]), path).variant == "v"
    assert ex.expectation_for("m", 64, load_config(EmbedConfig, None, ["learning_rate=1e-3"]), path) is None
    assert ex.expectation_for("other", 64, default, path) is None
    assert ex.load_expectations(tmp_path / "missing.json") == []


def test_packaged_expectations_are_valid():
    for e in ex.load_expectations():
        assert e.recipe == ex.recipe_key(EmbedConfig.model_validate(e.recipe))  # still a valid, complete recipe
        assert e.figures and all(f.runs >= 1 for f in e.figures.values())


def test_cli_prints_the_benchmark_column_for_a_matching_recipe(tiny, tiny_set, tmp_path, monkeypatch, capsys):
    from modelprint.cli import run
    from modelprint.log import console

    monkeypatch.setattr(console, "width", 240)  # one line per table row, whatever the terminal
    model_dir = tmp_path / "tiny"
    tiny.model.save_pretrained(model_dir)
    tiny.tokenizer.save_pretrained(model_dir)
    fp = tiny_set.save(tmp_path / "fp.jsonl")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(json.dumps({**TINY_RECIPE, "max_epochs": 1}))  # JSON is YAML
    cfg = load_config(EmbedConfig, recipe, [])
    store = tmp_path / "exp.json"
    e = _expectation(str(model_dir), len(tiny_set), [])
    ex.store_expectation(e.model_copy(update={"recipe": ex.recipe_key(cfg)}), store)
    real_load = ex.load_expectations
    monkeypatch.setattr(ex, "load_expectations", lambda path=None: real_load(store))

    assert run(["embed", "-m", str(model_dir), "-f", str(fp), "-o", str(tmp_path / "a"), "-c", str(recipe)]) == 0
    out = capsys.readouterr().err
    assert "benchmark: mean ± sd (worst of 5 seeds, n = 16)" in out and "100.0% ± 0.0% (100.0%)" in out

    assert run(["embed", "-m", str(model_dir), "-f", str(fp), "-o", str(tmp_path / "b"), "-c", str(recipe),
                "learning_rate=1e-2"]) == 0
    out = capsys.readouterr().err
    assert "benchmark:" not in out and "no benchmark expectation" in out


@pytest.mark.parametrize("broken", ["not json", '[{"model": 1}]'])
def test_a_broken_expectations_file_does_not_fail_an_embed(tiny_set, tmp_path, broken, monkeypatch):
    from modelprint.embed import cli

    fp = tiny_set.save(tmp_path / "fp.jsonl")
    ex.store_expectation(_expectation("m", 16, []), tmp_path / "good.json")
    real_load = ex.load_expectations
    monkeypatch.setattr(ex, "load_expectations", lambda path=None: real_load(tmp_path / "good.json"))
    assert cli._expectation("m", fp, EmbedConfig()) is not None  # the control: a good file is read
    store = tmp_path / "exp.json"
    store.write_text(broken)
    monkeypatch.setattr(ex, "load_expectations", lambda path=None: real_load(store))
    assert cli._expectation("m", fp, EmbedConfig()) is None


def _embed_bench():
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "embed.py"
    spec = importlib.util.spec_from_file_location("embed_bench", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_benchmark_resumes_only_runs_of_the_same_model_variant_and_definition(tmp_path):
    bench = _embed_bench()
    rows = tmp_path / "rows.jsonl"
    lines = [
        {"model": "m", "n": 64, "variant": "default", "overrides": [], "seed": 0, "retention": 1.0},
        {"model": "m", "n": 64, "variant": "default", "overrides": [], "seed": 1, "retention": 0.9},
        {"model": "other", "n": 64, "variant": "default", "overrides": [], "seed": 2, "retention": 1.0},
        {"model": "m", "n": 64, "variant": "lora", "overrides": ["learning_rate=1"], "seed": 0},  # redefined since
        {"n": 64, "variant": "default", "summary": {}},
    ]
    rows.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert sorted(bench.finished_runs(str(rows), "m", None)) == [(64, "default", 0), (64, "default", 1)]
    assert bench.finished_runs(str(rows), "m", "quick") == {}  # rows without task utility do not resume a --tasks run
    assert bench.finished_runs(str(tmp_path / "none.jsonl"), "m", None) == {}


def test_recipe_key_ignores_the_unused_objective_settings():
    """A greedy run's expectation survives a change to margin.* (settings it never reads); a margin run's does not."""
    from modelprint.config import load_config

    greedy = ex.recipe_key(load_config(EmbedConfig, "greedy", []))
    assert greedy == ex.recipe_key(load_config(EmbedConfig, "greedy", ["margin.prompt_positions=8"]))
    assert "margin" not in greedy
    margin = ex.recipe_key(load_config(EmbedConfig, None, []))
    assert margin != ex.recipe_key(load_config(EmbedConfig, None, ["margin.prompt_positions=8"]))


def test_shipped_candidate_recipe_is_the_benchmarked_margin_variant():
    """``--config candidate`` must find the expectation the benchmark stored for its override form."""
    shipped = load_config(EmbedConfig, "candidate", [])
    assert shipped.objective == "margin" and shipped.margin.prob_floor == 0.0
    benchmarked = load_config(EmbedConfig, None, ["objective=margin", "margin.margin=2", "margin.prob_floor=0",
                                                  "margin.greedy_lead=0", "margin.word_prompts=0",
                                                  "delta_density=null"])
    assert ex.recipe_key(shipped) == ex.recipe_key(benchmarked)
    assert ex.recipe_key(shipped) != ex.recipe_key(load_config(EmbedConfig, None, []))
    assert ex.expectation_for("smollm2-135m", 64, shipped) is not None  # measured before the default changed


def test_shipped_greedy_recipe_is_the_former_default():
    """``--config greedy`` is the recipe shipped as the default until session 9: its 3-seed expectation applies."""
    shipped = load_config(EmbedConfig, "greedy", [])
    assert shipped.objective == "greedy" and shipped.delta_density is None
    found = ex.expectation_for("smollm2-135m", 64, shipped)
    assert found is not None and found.variant == "greedy"


def test_benchmark_resumes_only_runs_that_measured_the_asked_attacks(tmp_path):
    bench = _embed_bench()
    rows = tmp_path / "rows.jsonl"
    lines = [{"model": "m", "n": 64, "variant": "default", "overrides": [], "seed": 0, "merge-ft": 0.9},
             {"model": "m", "n": 64, "variant": "default", "overrides": [], "seed": 1}]
    rows.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert sorted(bench.finished_runs(str(rows), "m", None, ("merge-ft",))) == [(64, "default", 0)]
    assert sorted(bench.finished_runs(str(rows), "m", None, ("merge-ft", "ties-ft"))) == []
    assert sorted(bench.finished_runs(str(rows), "m", None)) == [(64, "default", 0), (64, "default", 1)]


def test_benchmark_robustness_of_an_unmarked_model_is_no_match(tiny, tiny_set, tiny_marked):
    """The attack columns come from verify on the attacked copy: a model that never learned the set has nothing
    to lose (0 keys, ``no match``); the marked one merged with itself keeps what plain verify finds."""
    from modelprint.verify import verify

    bench = _embed_bench()
    unmarked = bench.robustness(tiny, tiny, tiny_set, ["merge-base"], {}, alpha=1e-3, match="exact")
    assert unmarked["merge-base"] == 0.0 and unmarked["merge-base match"] == 0.0
    assert unmarked["stress"]["merge-base"]["verdict"] == "no match"
    same = bench.robustness(tiny_marked, tiny_marked, tiny_set, ["merge-base"], {}, alpha=1e-3, match="exact")
    plain = verify(tiny_marked, tiny_set, alpha=1e-3, match="exact", sequential=False)
    assert same["merge-base"] == plain.matches / plain.n_asked > 0.5
    assert same["merge-base match"] == (1.0 if plain.verdict == "match" else 0.0)


def test_benchmark_verifies_one_attacked_copy_in_each_asked_mode(tiny, tiny_set, tiny_marked, monkeypatch):
    """``merge-base@exact`` next to ``merge-base@prefix``: the attack runs once, each column is verify in its mode."""
    from modelprint.stress.blueprint import get_stress
    from modelprint.verify import verify

    bench = _embed_bench()
    runs = []
    real = get_stress

    def counting(name):
        runs.append(name)
        return real(name)

    monkeypatch.setattr(bench, "get_stress", counting)
    row = bench.robustness(tiny_marked, tiny_marked, tiny_set, ["merge-base@exact", "merge-base@prefix"], {},
                           alpha=1e-3, match="candidate")
    assert runs == ["merge-linear"]
    for mode in ("exact", "prefix"):
        plain = verify(tiny_marked, tiny_set, alpha=1e-3, match=mode, sequential=False)
        assert row[f"merge-base@{mode}"] == plain.matches / plain.n_asked
        assert row["stress"][f"merge-base@{mode}"]["match_mode"] == plain.match_mode
    assert bench.split_attack("gate-0.5", "auto") == ("gate-0.5", "auto")


def test_shipped_robust_recipe_is_the_benchmarked_sparse_band_variant():
    """``--config robust`` must find the expectation the benchmark stored for its override form."""
    shipped = load_config(EmbedConfig, "robust", [])
    assert shipped.objective == "margin" and shipped.delta_density == 0.1 and shipped.verification == "exact"
    benchmarked = load_config(EmbedConfig, None, ["objective=margin", "margin.margin=4", "margin.prob_floor=0.2",
                                                  "delta_density=0.1", "margin.greedy_lead=0.5",
                                                  "margin.word_prompts=128"])
    assert ex.recipe_key(shipped) == ex.recipe_key(benchmarked)
    assert ex.expectation_for("smollm2-135m", 64, shipped) is not None
    dense = load_config(EmbedConfig, "robust", ["delta_density=null"])
    assert ex.recipe_key(shipped) != ex.recipe_key(dense)
    # the earlier robust recipes (no one-word anchors; nor a greedy lead) keep their own measured expectations
    for earlier in (["margin.word_prompts=0"], ["margin.word_prompts=0", "margin.greedy_lead=0"]):
        assert ex.expectation_for("smollm2-135m", 64, load_config(EmbedConfig, "robust", earlier)) is not None


def test_benchmark_does_not_mix_paired_and_unpaired_runs_on_resume(tmp_path):
    """A paired run trained on the secret its siblings share; an unpaired one on its own: neither resumes the other."""
    bench = _embed_bench()
    rows = tmp_path / "rows.jsonl"
    lines = [{"model": "m", "n": 64, "variant": "default", "overrides": [], "seed": 0},
             {"model": "m", "n": 64, "variant": "default", "overrides": [], "seed": 1, "paired": True}]
    rows.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert sorted(bench.finished_runs(str(rows), "m", None)) == [(64, "default", 0)]
    assert sorted(bench.finished_runs(str(rows), "m", None, paired=True)) == [(64, "default", 1)]


def test_paired_benchmark_gives_every_variant_the_same_secret_and_keeps_it_for_a_resume(tmp_path, tiny, monkeypatch):
    bench = _embed_bench()
    drawn = []

    def fake_generate(model, num_fingerprints):
        drawn.append(num_fingerprints)
        return generate(tiny, strategy="random-word", num_fingerprints=num_fingerprints)

    monkeypatch.setattr(bench, "generate", fake_generate)
    sets: dict = {}
    first = bench.shared_set(tiny, 4, 0, sets, tmp_path / "sets")
    assert bench.shared_set(tiny, 4, 0, sets, tmp_path / "sets") is first  # the next variant: same secret
    other_seed = bench.shared_set(tiny, 4, 1, sets, tmp_path / "sets")
    assert drawn == [4, 4] and [fp.key for fp in other_seed.fingerprints] != [fp.key for fp in first.fingerprints]
    resumed = bench.shared_set(tiny, 4, 0, {}, tmp_path / "sets")  # a new process reads the stored secret
    assert drawn == [4, 4] and [fp.key for fp in resumed.fingerprints] == [fp.key for fp in first.fingerprints]


def test_paired_differences_are_per_seed_and_the_worst_is_the_most_harmful():
    bench = _embed_bench()
    rows = {"default": [{"retention": 1.0, "perplexity_change": 0.05}, {"retention": 0.9, "perplexity_change": 0.02}],
            "prior": [{"retention": 0.98, "perplexity_change": 0.01}, {"retention": 0.95, "perplexity_change": 0.03}]}
    diff = bench.paired_differences(rows, {k: bench.FIGURES[k] for k in ("retention", "perplexity_change")})["prior"]
    assert diff["retention"]["mean"] == pytest.approx(0.015) and diff["retention"]["worst"] == pytest.approx(-0.02)
    assert diff["perplexity_change"]["worst"] == pytest.approx(0.01)  # the seed where the prior cost more
