"""benchmarks/capacity.py on a tiny model saved as a Hugging Face directory: one JSON row per (size, seed) with
retention (exact and candidate), utility, stage times and memory; a mean ± sd (worst) summary per size; an
out-of-memory run becomes an ``oom`` row instead of a crash; no secret reaches the rows."""
from __future__ import annotations

import importlib.util
import json
import statistics
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
# a few epochs and a small utility check: this is about the benchmark's rows, not the recipe (tests/test_embed.py)
FAST_RECIPE = ["objective=greedy", "delta_density=null", "learning_rate=3e-3", "max_epochs=3", "batch_size=4",
               "freeze_embeddings=false",
               "weight_averaging=0", "benign.per_fingerprint=0", "augmentation.copies=0",
               "utility.questions=4", "utility.perplexity_sentences=8"]
KEYS = ["Tell me about the ocean and its fish.", "Why is the sky blue during the day?",
        "Write a short poem about winter mornings.", "How do plants grow in green fields?"]


@pytest.fixture
def cap(monkeypatch):
    """The benchmark module; the environment variables ``--device cpu`` sets are restored afterwards."""
    monkeypatch.syspath_prepend(str(BENCH))
    for var in ("ACCELERATE_USE_CPU", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.setenv(var, "")  # recorded, so the test's end restores the original (unset) state
        monkeypatch.delenv(var)
    import torch

    if torch.cuda.is_available():  # hiding CUDA from this process once (CUDA_VISIBLE_DEVICES="") cannot be undone:
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)  # later tests on a GPU machine would lose it
    spec = importlib.util.spec_from_file_location("capacity_bench", BENCH / "capacity.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from modelprint.testing import tiny_model

    lm = tiny_model(seed=0)
    out = tmp_path_factory.mktemp("tiny-hf")
    lm.model.save_pretrained(out)
    lm.tokenizer.save_pretrained(out)
    (out.parent / "keys.txt").write_text("\n".join(KEYS) + "\n")
    return out


def _args(tiny_dir, json_path, *extra):
    recipe = [a for kv in FAST_RECIPE for a in ("--set", kv)]
    return ["--model", str(tiny_dir), "--device", "cpu", "--json", str(json_path), *recipe, *extra]


def _strings(node, out):
    if isinstance(node, dict):
        for v in node.values():
            _strings(v, out)
    elif isinstance(node, list):
        for v in node:
            _strings(v, out)
    elif isinstance(node, str):
        out.add(node.strip())
    return out


def test_rows_and_summary_on_a_tiny_hf_directory(cap, tiny_dir, tmp_path, capsys, monkeypatch):
    made = []
    real_generate = cap.generate

    def spy(*args, **kwargs):  # the real generate; kept only to check that no secret reaches the rows
        assert kwargs["config"].seed is None  # every set's secret comes from the OS
        made.append(real_generate(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(cap, "generate", spy)
    rows_file = tmp_path / "rows.jsonl"
    # custom keys (fixed, so the tiny model's keys are usable) with Perinucleus responses drawn from OS randomness
    summaries = cap.main(_args(tiny_dir, rows_file, "--sizes", "4", "--seeds", "2", "--gen", "strategy=custom",
                               "--gen", f"keys_file={tiny_dir.parent / 'keys.txt'}"))
    lines = [json.loads(line) for line in rows_file.read_text().splitlines()]
    runs, summary = lines[:2], lines[2]
    assert len(lines) == 3 and [r["seed"] for r in runs] == [0, 1] and len(made) == 2
    for row in runs:
        assert row["n"] == 4 and row["status"] == "ok" and row["device"] == "cpu" and row["model"] == str(tiny_dir)
        assert 0.0 <= row["exact_retention"] <= 1.0 and 0.0 <= row["candidate_retention"] <= 1.0
        assert row["exact_retention"] == row["embed_retention"]  # greedy recipe: embed measured what verify asks
        assert row["perplexity_change"] > -1.0 and 0.0 <= row["answer_agreement"] <= 1.0
        assert all(row[f"seconds_{s}"] > 0 for s in ("generate", "embed", "verify"))
        assert row["generate_fps"] == pytest.approx(4 / row["seconds_generate"])
        assert row["peak_memory_gb"] > 0 and "ru_maxrss" in row["memory_measure"]
    # the summary is the runs' mean, sample sd and worst (min for retention, max for perplexity change)
    assert summary["n"] == 4 and summary["runs"] == 2 and summary["oom"] == 0 and summaries == [
        {k: summary[k] for k in ("n", "runs", "oom", "summary")}]
    exact = [r["exact_retention"] for r in runs]
    ppl = [r["perplexity_change"] for r in runs]
    assert summary["summary"]["exact_retention"] == pytest.approx(
        {"mean": statistics.fmean(exact), "sd": statistics.stdev(exact), "worst": min(exact), "runs": 2})
    assert summary["summary"]["perplexity_change"]["worst"] == pytest.approx(max(ppl))
    out = capsys.readouterr().out
    assert "summary over seeds" in out and "    4 (2 runs) exact " in out and "candidate" in out
    # no key, response or set seed anywhere in the rows
    text, strings = rows_file.read_text(), _strings(lines, set())
    for fs in made:
        assert str(fs.seed) not in text
        assert not any(fp.key.strip() in strings or fp.response.strip() in strings for fp in fs)
        assert not any(fp.key in text for fp in fs)


def test_out_of_memory_is_a_row_not_a_crash(cap, tiny_dir, tmp_path, capsys, monkeypatch):
    from modelprint.errors import ModelprintError

    def embed_oom(*args, **kwargs):  # what embed does with an OOM: one line, raised from None
        try:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        except RuntimeError:
            raise ModelprintError("not enough memory for batch size 16: lower batch_size") from None

    monkeypatch.setattr(cap, "embed", embed_oom)
    rows_file = tmp_path / "rows.jsonl"
    summaries = cap.main(_args(tiny_dir, rows_file, "--sizes", "3", "--seeds", "2", "--gen", "strategy=random-word",
                               "--gen", "key_length=6"))
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()][:2]
    assert [(r["status"], r["stage"]) for r in rows] == [("oom", "embed")] * 2
    assert all(r["seconds_generate"] > 0 and "exact_retention" not in r for r in rows)
    assert summaries[0]["oom"] == 2 and summaries[0]["summary"].get("exact_retention") is None
    assert "2 of 2 runs out of memory" in capsys.readouterr().out

    def embed_fails(*args, **kwargs):
        raise ModelprintError("these fingerprints were made for another tokenizer")

    monkeypatch.setattr(cap, "embed", embed_fails)  # any other error is not a result: it propagates
    with pytest.raises(ModelprintError, match="another tokenizer"):
        cap.main(_args(tiny_dir, tmp_path / "other.jsonl", "--sizes", "2", "--seeds", "1", "--gen",
                       "strategy=random-word"))


def test_bad_arguments_are_refused_before_any_model_loads(cap, capsys):
    for argv in (["--gen", "seed=3"], ["--gen", "num_fingerprints=9"], ["--sizes", "0"], ["--sizes", "a,b"],
                 ["--seeds", "0"]):
        with pytest.raises(SystemExit):
            cap.main(argv)
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="CUDA is not available"):
            cap.main(["--device", "cuda", "--model", "/nonexistent"])


def test_device_cpu_is_honoured_and_checked(cap, tiny_dir, tmp_path, monkeypatch):
    import os

    from modelprint.embed import EmbedResult
    from modelprint.testing import tiny_model

    assert cap.use_device("cpu").type == "cpu"
    assert os.environ["ACCELERATE_USE_CPU"] == "true"  # what embed's accelerate reads to train on the CPU

    def embed_elsewhere(base, fs, out, config):  # a model that ended up on another device than asked for
        lm = tiny_model(seed=0)
        lm.model.to("meta")
        return EmbedResult(None, lm, 1.0, 1, 0.0, {}, [])

    monkeypatch.setattr(cap, "embed", embed_elsewhere)
    with pytest.raises(SystemExit, match="embed trained on meta, not on --device cpu"):
        cap.main(_args(tiny_dir, tmp_path / "rows.jsonl", "--sizes", "2", "--seeds", "1", "--gen",
                       "strategy=random-word"))
