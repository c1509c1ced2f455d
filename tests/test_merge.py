"""Tests for the merge stage on tiny in-memory Llama models (seconds each)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from modelprint.config import load_config
from modelprint.errors import ConfigError, ModelprintError
from modelprint.merge import METHODS, MergeConfig, get_method, merge
from modelprint.merge.llama import LlamaShape, block, embed, logits, rope
from modelprint.merge.pleas_align import Alignment, assign_heads, permute
from modelprint.merge.task_arithmetic import TaskVectorParams, TiesParams, combine
from modelprint.merge.tensors import clone_with_state, float_state
from modelprint.models import LoadedModel
from modelprint.testing import tiny_model

CPU = torch.device("cpu")
SMALL_CALIB = {"num_sequences": 16, "seq_len": 64}
EXAMPLES = Path(__file__).resolve().parents[1] / "src" / "modelprint" / "configs" / "merge"


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    return tiny_model(seed=1)


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    return torch.randint(0, 300, (2, 24), generator=torch.Generator().manual_seed(0))


def functional_logits(sd, s, template, tokens):
    h, cs = embed(sd, tokens), rope(template, tokens)
    for i in range(s.layers):
        h = block(sd, i, h, cs, s)["out"]
    return logits(sd, h, s)


def random_alignment(s: LlamaShape, seed: int) -> Alignment:
    """Random permutations of residual, heads (kv groups kept together) and MLP units."""
    g = torch.Generator().manual_seed(seed)
    rp = lambda n: torch.randperm(n, generator=g)  # noqa: E731
    group = s.heads // s.kv_heads
    al = Alignment(rp(s.hidden), [], [], [], [])
    for _ in range(s.layers):
        kv = rp(s.kv_heads)
        al.kv_heads.append(kv)
        al.heads.append(torch.cat([kv[a] * group + rp(group) for a in range(s.kv_heads)]))
        al.mlp.append(rp(s.intermediate))
        al.mlp_score.append(torch.ones(s.intermediate))
    return al


def permuted_copy(m: LoadedModel, seed: int) -> tuple[LoadedModel, Alignment]:
    s = LlamaShape.of(m.model)
    al = random_alignment(s, seed)
    sd = permute(float_state(m.model, CPU), s, al)
    return LoadedModel(clone_with_state(m.model, sd), m.tokenizer, source=f"permuted(seed={seed})"), al


def load_out(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).eval()


# --------------------------------------------------------------------------- building blocks
def test_functional_forward_matches_transformers(model, tokens):
    s = LlamaShape.of(model.model)
    ours = functional_logits(float_state(model.model, CPU), s, model.model, tokens)
    assert torch.allclose(ours, model.model(tokens).logits, atol=1e-5)


@pytest.mark.parametrize("heads,kv_heads", [(4, 2), (4, 1), (4, 4)])
def test_permuted_copy_computes_the_same_function(tokens, heads, kv_heads):
    m = tiny_model(seed=2, heads=heads, kv_heads=kv_heads)
    p, _ = permuted_copy(m, seed=5)
    assert not torch.equal(p.model.model.embed_tokens.weight, m.model.model.embed_tokens.weight)
    assert torch.allclose(p.model(tokens).logits, m.model(tokens).logits, atol=1e-5)


def test_assign_heads_respects_gqa_groups():
    # sim[h, g] high where reference head h is other head g; heads 0,1 | 2,3 form kv groups.
    truth = torch.tensor([3, 2, 1, 0])
    sim = torch.eye(4)[truth]  # sim[h, truth[h]] = 1
    head_perm, kv_perm = assign_heads(sim, kv_heads=2)
    assert head_perm.tolist() == truth.tolist() and kv_perm.tolist() == [1, 0]


# --------------------------------------------------------------------------- pleas
@pytest.mark.parametrize("least_squares", [False, True])
def test_pleas_recovers_a_permuted_copy(tmp_path, model, tokens, least_squares):
    permuted, _ = permuted_copy(model, seed=7)
    out = merge({"method": "pleas", "models": [model, permuted],
                 "parameters": {**SMALL_CALIB, "least_squares": least_squares}}, tmp_path / "m")
    merged = load_out(out).state_dict()
    original = model.model.state_dict()
    atol = 0 if not least_squares else 1e-4
    for k, v in original.items():
        assert torch.allclose(merged[k], v, atol=atol), k
    manifest = json.loads((out / "modelprint.json").read_text())
    assert manifest["method"] == "pleas" and len(manifest["models"]) == 2
    assert manifest["models"][0]["model_hash"] == model.model_hash
    assert "PLeaS" in (out / "README.md").read_text()


def test_pleas_gqa_single_kv_head_recovery(tmp_path):
    m = tiny_model(seed=4, heads=4, kv_heads=1)
    permuted, _ = permuted_copy(m, seed=9)
    out = merge({"method": "pleas", "models": [m, permuted], "parameters": {**SMALL_CALIB, "least_squares": False}},
                tmp_path / "m")
    merged = load_out(out).state_dict()
    assert all(torch.equal(merged[k], v) for k, v in m.model.state_dict().items())


def test_pleas_partial_matching_widens_mlp_and_keeps_function(tmp_path, model, tokens):
    permuted, _ = permuted_copy(model, seed=3)
    out = merge({"method": "pleas", "models": [model, permuted],
                 "parameters": {**SMALL_CALIB, "match_fraction": 0.75}}, tmp_path / "m")
    merged = load_out(out)
    m = model.model.config.intermediate_size
    assert merged.config.intermediate_size == m + m // 4
    # identical parents: duplicated unmatched units each carry half the weight, so the function is kept
    assert torch.allclose(merged(tokens).logits, model.model(tokens).logits, atol=1e-3)


def test_pleas_different_seeds_runs_and_loads(tmp_path, tokens):
    a, b = tiny_model(seed=11), tiny_model(seed=12)
    out = merge({"method": "pleas", "models": [{"model": a, "weight": 3}, {"model": b, "weight": 1}],
                 "parameters": SMALL_CALIB}, tmp_path / "m")
    assert torch.isfinite(load_out(out)(tokens).logits).all()
    weights = [p["weight"] for p in json.loads((out / "modelprint.json").read_text())["models"]]
    assert weights == [0.75, 0.25]


# --------------------------------------------------------------------------- parameter-space methods
def test_linear_of_identical_models_is_identity(tmp_path, model):
    out = merge({"method": "linear", "models": [model, model, {"model": model, "weight": 2.0}]}, tmp_path / "m")
    merged = load_out(out).state_dict()
    assert all(torch.allclose(merged[k], v, atol=1e-7) for k, v in model.model.state_dict().items())


def test_linear_weights_are_normalised(tmp_path):
    a, b = tiny_model(seed=1), tiny_model(seed=2)
    out = merge({"method": "linear", "models": [{"model": a, "weight": 3}, {"model": b, "weight": 1}]}, tmp_path / "m")
    k = "model.layers.0.mlp.up_proj.weight"
    expect = 0.75 * a.model.state_dict()[k] + 0.25 * b.model.state_dict()[k]
    assert torch.allclose(load_out(out).state_dict()[k], expect, atol=1e-6)


def test_task_arithmetic_hand_example():
    t1, t2 = torch.tensor([1.0, -2.0, 0.0]), torch.tensor([3.0, 1.0, -1.0])
    got = combine([t1, t2], [0.5, -1.0], TaskVectorParams(scale=2.0))
    assert torch.allclose(got, 2.0 * (0.5 * t1 - t2))  # [-5, -4, 2]
    assert got.tolist() == [-5.0, -4.0, 2.0]


def test_ties_hand_example():
    t1, t2 = torch.tensor([2.0, -1.0, 0.5, 0.0]), torch.tensor([-3.0, -2.0, 1.0, 0.1])
    # trim to top 50%: t1 -> [2, -1, 0, 0], t2 -> [-3, -2, 0, 0]; elected sign: [-, -, 0, 0];
    # entry 0 keeps only t2 (-3); entry 1 averages -1 and -2 -> -1.5
    got = combine([t1, t2], [1.0, 1.0], TiesParams(density=0.5))
    assert got.tolist() == [-3.0, -1.5, 0.0, 0.0]


def test_task_arithmetic_and_ties_end_to_end(tmp_path, model):
    base_sd = float_state(model.model, CPU)
    k = "model.layers.1.mlp.down_proj.weight"

    def shifted(delta: torch.Tensor, name: str) -> LoadedModel:
        sd = dict(base_sd)
        sd[k] = base_sd[k].clone()
        sd[k][0, :4] += delta
        return LoadedModel(clone_with_state(model.model, sd), model.tokenizer, source=name)

    a = shifted(torch.tensor([2.0, -1.0, 0.5, 0.0]), "a")
    b = shifted(torch.tensor([-3.0, -2.0, 1.0, 0.1]), "b")
    ta = merge({"method": "task_arithmetic", "base_model": model,
                "models": [{"model": a, "weight": 0.5}, {"model": b, "weight": 0.5}]}, tmp_path / "ta")
    got = load_out(ta).state_dict()[k][0, :4] - base_sd[k][0, :4]
    assert torch.allclose(got, torch.tensor([-0.5, -1.5, 0.75, 0.05]), atol=1e-5)
    ties = merge({"method": "ties", "base_model": model, "models": [a, b], "parameters": {"density": 1.0}},
                 tmp_path / "ties")
    got = load_out(ties).state_dict()[k][0, :4] - base_sd[k][0, :4]
    assert torch.allclose(got, torch.tensor([-3.0, -1.5, 0.75, 0.1]), atol=1e-5)
    other = load_out(ties).state_dict()["model.layers.0.self_attn.q_proj.weight"]
    assert torch.equal(other, base_sd["model.layers.0.self_attn.q_proj.weight"])  # zero task vectors


# --------------------------------------------------------------------------- bad input
def _fails(tmp_path: Path, config, match: str, error=ModelprintError) -> None:
    out = tmp_path / "out"
    with pytest.raises(error, match=match):
        merge(config, out)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no partial directory


def test_bad_inputs(tmp_path, model):
    wide = tiny_model(seed=1, hidden=96)
    plain = tiny_model(seed=1, chat=False)
    _fails(tmp_path, {"method": "linear", "models": [model, wide]}, "architectures differ.*hidden_size")
    _fails(tmp_path, {"method": "linear", "models": [model, plain]}, "tokenizers differ")
    _fails(tmp_path, {"method": "linear", "models": [model, str(tmp_path / "nope")]}, "does not exist")
    _fails(tmp_path, {"method": "linear", "models": [{"model": model, "weight": -1}, model]}, "weight > 0", ConfigError)
    _fails(tmp_path, {"method": "soup", "models": [model]}, "unknown merge method 'soup'", ConfigError)
    _fails(tmp_path, {"method": "linear", "models": [model], "weights": [1]}, "unknown config key 'weights'",
           ConfigError)
    _fails(tmp_path, {"method": "ties", "base_model": model, "models": [model], "parameters": {"densty": 0.1}},
           "unknown parameter 'parameters.densty'", ConfigError)
    _fails(tmp_path, {"method": "ties", "base_model": model, "models": [model], "parameters": {"density": 2}},
           "density", ConfigError)
    _fails(tmp_path, {"method": "task_arithmetic", "models": [model]}, "needs a base_model", ConfigError)
    _fails(tmp_path, {"method": "linear", "base_model": model, "models": [model]}, "does not use a base_model",
           ConfigError)
    _fails(tmp_path, {"method": "pleas", "models": [model]}, "at least two models", ConfigError)
    _fails(tmp_path, {"method": "pleas", "models": [model] * 3, "parameters": {"match_fraction": 0.5}},
           "exactly two models", ConfigError)
    _fails(tmp_path, {"method": "linear", "models": []}, "models", ConfigError)


def test_existing_output_needs_overwrite(tmp_path, model):
    out = tmp_path / "m"
    merge({"method": "linear", "models": [model]}, out)
    with pytest.raises(ModelprintError, match="already exists"):
        merge({"method": "linear", "models": [model]}, out)
    merge({"method": "linear", "models": [model]}, out, overwrite=True)
    assert (out / "config.json").is_file()


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_example_configs_validate(example):
    cfg = load_config(MergeConfig, EXAMPLES / example)
    assert cfg.method in METHODS
    get_method(cfg.method, cfg.parameters)


# --------------------------------------------------------------------------- CLI
def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "modelprint.cli", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_cli_merges_and_reports_errors_in_one_line(tmp_path, model):
    src = tmp_path / "tiny"
    model.model.save_pretrained(src)
    model.tokenizer.save_pretrained(src)
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"method": "linear", "models": [str(src), {"model": str(src), "weight": 3}]}))
    res = _cli("merge", str(good), "--out", str(tmp_path / "merged"))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "merged" / "modelprint.json").is_file()

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"method": "linear", "models": [str(src)], "colour": "red"}))
    res = _cli("merge", str(bad), "--out", str(tmp_path / "out"))
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "unknown config key 'colour'" in lines[0], res.stderr
    assert not (tmp_path / "out").exists()

    single = tmp_path / "single.yaml"
    single.write_text(yaml.safe_dump({"method": "linear", "models": [str(src)]}))
    res = _cli("merge", str(single), "--out", str(tmp_path / "out2"), "--set", "method=pleas")
    assert res.returncode != 0 and "at least two models" in res.stderr
    assert not (tmp_path / "out2").exists()
