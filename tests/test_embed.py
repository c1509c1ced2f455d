"""embed: full and LoRA recipes, averaging, resume after a kill, output directory, bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import tiny_recipe
from modelprint.embed import embed
from modelprint.embed.recipe import _average_with_base, select_trainable
from modelprint.errors import ConfigError, FingerprintFileError, ModelprintError, OutputExistsError
from modelprint.verify import verify


def test_full_finetune_writes_loadable_dir_without_secrets(tiny, tiny_set, tmp_path):
    out = tmp_path / "marked"
    result = embed(tiny, tiny_set, out, config=tiny_recipe())
    assert result.retention >= 0.9 and out.is_dir()
    assert not any(p.name.startswith(".marked") for p in tmp_path.iterdir())  # no partial dirs left
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out)
    manifest = json.loads((out / "modelprint.json").read_text())
    assert manifest["fingerprints"]["set_id"] == tiny_set.set_id
    assert manifest["base_model"]["hash"] == tiny.model_hash and manifest["retention"] == result.retention
    everything = "".join(p.read_text(errors="ignore") for p in out.iterdir() if p.suffix in (".json", ".md"))
    assert not any(fp.key in everything for fp in tiny_set)
    values = set()  # every string value in the JSON files (a response word may be a config key, e.g. "alpha")

    def collect(node):
        if isinstance(node, dict):
            for v in node.values():
                collect(v)
        elif isinstance(node, list):
            for v in node:
                collect(v)
        elif isinstance(node, str):
            values.add(node.strip())

    for p in out.glob("*.json"):
        collect(json.loads(p.read_text()))
    assert not any(fp.response.strip() in values for fp in tiny_set)
    assert verify(str(out), tiny_set).verdict == "match"
    with pytest.raises(OutputExistsError):
        embed(tiny, tiny_set, out, config=tiny_recipe())


def test_lora_merged(tmp_path):
    from modelprint.generate import generate
    from modelprint.testing import tiny_model

    # LoRA cannot move the output embeddings, so the tiny model needs a larger init to learn in seconds.
    base = tiny_model(seed=2, init_std=0.2)
    fs = generate(base, strategy="random-word", num_fingerprints=16, key_length=6, seed=4)
    before = verify(base, fs).matches
    merged = embed(base, fs, tmp_path / "lora", config=tiny_recipe(learning_rate=1e-2, lora={"enabled": True, "r": 8}))
    assert merged.retention >= 0.9
    assert not any("lora" in n for n, _ in merged.model.model.named_parameters())
    assert verify(str(tmp_path / "lora"), fs).verdict == "match"
    assert verify(base, fs).matches == before  # the base model in memory was not modified


def test_weight_averaging_math():
    lin = torch.nn.Linear(2, 2, bias=False)
    base = {"weight": torch.zeros(2, 2)}
    with torch.no_grad():
        lin.weight.fill_(4.0)
    _average_with_base(lin, base, 0.75)
    assert torch.allclose(lin.weight, torch.full((2, 2), 1.0))


def test_averaging_at_zero_and_one_gives_the_trained_and_the_base_weights_exactly():
    torch.manual_seed(0)
    trained, base = torch.randn(8, 8), torch.randn(8, 8)
    for lam, expected in ((0.0, trained), (1.0, base)):
        lin = torch.nn.Linear(8, 8, bias=False)
        with torch.no_grad():
            lin.weight.copy_(trained)
        _average_with_base(lin, {"weight": base}, lam)
        assert torch.equal(lin.weight, expected)


def _reloaded_agrees(result, fs, out_dir):
    """In-memory model vs the same weights saved and loaded again: next-token distributions and retention."""
    from modelprint.decoding import next_token_probs
    from modelprint.models import load_model
    from modelprint.prompts import encode_prompts
    from modelprint.verify.local import retention

    reloaded = load_model(str(out_dir))
    prompts = encode_prompts(reloaded.tokenizer, [fp.key for fp in fs], fs.system_prompt)
    in_memory = next_token_probs(result.model, prompts)
    assert (in_memory - next_token_probs(reloaded, prompts)).abs().max() < 1e-5
    assert retention(result.model, list(fs), fs.system_prompt)[0] == retention(reloaded, list(fs), fs.system_prompt)[0]
    assert retention(reloaded, list(fs), fs.system_prompt)[0] == pytest.approx(result.retention)


def test_auto_averaged_model_in_memory_equals_the_saved_one(tiny, tiny_set, tmp_path):
    """What embed measures in memory (retention after averaging, utility) is what the saved model does.

    With bf16 autocast accelerate patches ``forward``; removing the patch must not strip transformers' own
    decorators (on 5.24 that silently dropped a KV cache passed by its old name and broke auto-averaging).
    """
    result = embed(tiny, tiny_set, tmp_path / "marked",
                   config=tiny_recipe(weight_averaging=0.5, averaging="auto", retention_floor=0.9,
                                      mixed_precision="bf16"))
    assert "forward" not in result.model.model.__dict__  # the class's own forward, decorators and all
    _reloaded_agrees(result, tiny_set, tmp_path / "marked")


def test_train_layers_and_frozen_embeddings(tiny):
    import copy

    model = copy.deepcopy(tiny.model)
    names = select_trainable(model, tiny_recipe(train_layers=1, freeze_embeddings=True))
    assert names and all("layers.0." not in n and "embed_tokens" not in n and "lm_head" not in n for n in names)
    assert any("layers.1." in n for n in names)


def test_benign_mixing_and_augmentation_run(tiny, tiny_set, monkeypatch, tmp_path):
    monkeypatch.setenv("MODELPRINT_CACHE", str(tmp_path / "cache"))
    cfg = tiny_recipe(max_epochs=2, benign={"per_fingerprint": 1.0, "questions": 6, "model_written": 2, "answer_tokens": 2,
                                            "top_k": 4}, augmentation={"copies": 1})
    result = embed(tiny, tiny_set, None, config=cfg)
    assert result.epochs == 2 and all(h["loss"] > 0 for h in result.history)
    assert list((tmp_path / "cache" / "benign").glob("*.pt"))  # pool cached for the next run



def test_margin_objective_builds_only_the_anchors_it_uses(tiny, tiny_set, monkeypatch, tmp_path):
    from modelprint.embed.benign import ordinary_questions, recipe_anchors

    monkeypatch.setenv("MODELPRINT_CACHE", str(tmp_path / "cache"))
    benign = {"questions": 12, "model_written": 4, "answer_tokens": 2, "top_k": 4}
    whole = recipe_anchors(tiny, tiny_recipe(objective="greedy", benign={**benign, "per_fingerprint": 1.0}), tiny_set)
    drawn = recipe_anchors(tiny, tiny_recipe(objective="margin", benign=benign, margin={"prompts": 5}), tiny_set)
    assert len(whole) == 16 and len(drawn) == 5
    decoded = [tiny.tokenizer.decode(e.prompt_ids) for e in drawn]
    questions = ordinary_questions(12, 0)
    drawn_questions = [q for q in questions if any(q in d for d in decoded)]
    assert 0 < len(drawn_questions) <= 5  # a draw from the ordinary questions (and the model-written rest)
    again = recipe_anchors(tiny, tiny_recipe(objective="margin", benign=benign, margin={"prompts": 5}), tiny_set)
    assert [e.prompt_ids for e in again] == [e.prompt_ids for e in drawn]  # seeded, and cached apart from the whole

def test_resume_after_kill(tiny, tiny_set, tmp_path, monkeypatch):
    import modelprint.embed.recipe as recipe

    out = tmp_path / "marked"
    real = recipe.retention
    calls = {"n": 0}

    def dies_in_epoch_three(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(recipe, "retention", dies_in_epoch_three)
    with pytest.raises(KeyboardInterrupt):
        embed(tiny, tiny_set, out, config=tiny_recipe())
    assert not out.exists()
    progress = json.loads((tmp_path / ".marked.partial" / "progress.json").read_text())
    assert progress["epoch"] == 2
    monkeypatch.setattr(recipe, "retention", real)
    result = embed(tiny, tiny_set, out, config=tiny_recipe(), resume=True)
    assert result.history[0]["epoch"] == 1 and result.history[2]["epoch"] == 3  # continued, not restarted
    assert out.is_dir() and result.retention >= 0.9


def test_bad_input(tiny, tiny_set, tmp_path):
    from modelprint.testing import tiny_model

    with pytest.raises(FingerprintFileError, match="another model"):
        embed(tiny_model(seed=5), tiny_set, None, config=tiny_recipe(max_epochs=1))
    with pytest.raises(FingerprintFileError, match="another tokenizer"):
        embed(tiny_model(vocab_size=300), tiny_set, None, config=tiny_recipe(max_epochs=1))
    embed(tiny_model(seed=5), tiny_set, None, config=tiny_recipe(max_epochs=1), force=True)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(FingerprintFileError, match="empty"):
        embed(tiny, empty, tmp_path / "out", config=tiny_recipe())
    assert not (tmp_path / "out").exists()
    from modelprint.config import load_config
    from modelprint.embed import EmbedConfig

    with pytest.raises(ConfigError, match="unknown config key 'benign.ratio'"):
        load_config(EmbedConfig, None, ["benign.ratio=3"])
    with pytest.raises(ModelprintError, match="does not exist"):
        embed(tiny, tiny_set, tmp_path / "no" / "out", config=tiny_recipe())


def test_out_of_memory_is_one_line(tiny, tiny_set, monkeypatch):
    import modelprint.embed as embed_mod

    def boom(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 GB")

    monkeypatch.setattr(embed_mod, "run_recipe", boom)
    with pytest.raises(ModelprintError, match="not enough memory for batch size 4"):
        embed(tiny, tiny_set, None, config=tiny_recipe())


def test_cli_unknown_key_and_accelerate_two_processes(tiny, tiny_set, tmp_path):
    model_dir = tmp_path / "tiny"
    tiny.model.save_pretrained(model_dir)
    tiny.tokenizer.save_pretrained(model_dir)
    fp = tmp_path / "fp.jsonl"
    tiny_set.save(fp)
    bad = subprocess.run([sys.executable, "-m", "modelprint.cli", "embed", "-m", str(model_dir), "-f", str(fp),
                          "-o", str(tmp_path / "x"), "benign.ratio=2"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown config key 'benign.ratio'" in bad.stderr
    from importlib import resources

    config = resources.files("modelprint.configs").joinpath("accelerate/ddp-cpu.yaml")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
                          "-m", "modelprint.cli", "embed", "-m", str(model_dir), "-f", str(fp), "-o",
                          str(tmp_path / "ddp"), "--force", "--config", "greedy", "learning_rate=3e-3", "max_epochs=2",
                          "batch_size=4",
                          "freeze_embeddings=false", "benign.per_fingerprint=0", "augmentation.copies=0",
                          "utility.enabled=false"], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    manifest = json.loads((tmp_path / "ddp" / "modelprint.json").read_text())
    assert manifest["epochs"] == 2


def test_batched_teacher_matches_one_at_a_time(tiny):
    from modelprint.embed.benign import teacher_topk

    pairs = [([1, 5, 6, 7, 8], [9, 10, 11]), ([1, 5, 6], [12, 13])]
    for (prompt, target), (ids, logp) in zip(pairs, teacher_topk(tiny, pairs, 4)):
        with torch.no_grad():
            logits = tiny.model(input_ids=torch.tensor([prompt + target])).logits[0, len(prompt) - 1:-1]
        top = torch.topk(torch.log_softmax(logits, -1), 4, -1)
        assert torch.equal(top.indices, ids)
        assert torch.allclose(top.values - torch.logsumexp(top.values, -1, keepdim=True), logp, atol=1e-5)


def test_lora_restricted_to_last_layers(tiny):
    import copy

    from modelprint.embed.recipe import apply_lora

    model = apply_lora(copy.deepcopy(tiny.model), tiny_recipe(train_layers=1, lora={"enabled": True}))
    lora_names = [n for n, _ in model.named_parameters() if "lora_" in n]
    assert lora_names and all(".layers.1." in n for n in lora_names)
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in lora_names} >= {"q_proj", "down_proj"}


def test_auto_averaging_keeps_the_retention_floor(tiny, tiny_set):
    result = embed(tiny, tiny_set, None, config=tiny_recipe(weight_averaging=0.9, averaging="auto",
                                                            retention_floor=0.9))
    assert result.averaged in [round(0.05 * i, 2) for i in range(0, 19)]
    assert result.retention >= 0.9
    assert verify(result.model, tiny_set).matches == round(result.retention * len(tiny_set))


@pytest.mark.slow
def test_real_model_greedy_recipe_end_to_end(real_model, tmp_path, monkeypatch):
    """SmolLM2-135M: the greedy recipe (small benign pool, no utility check) embeds 24 Perinucleus keys."""
    from modelprint.config import load_config
    from modelprint.embed import EmbedConfig
    from modelprint.generate import generate

    monkeypatch.setenv("MODELPRINT_CACHE", str(tmp_path / "cache"))  # the benign pool is built, not reused
    fs = generate(real_model, num_fingerprints=24, seed=3)
    cfg = load_config(EmbedConfig, "greedy", ["benign.questions=48", "benign.model_written=0", "utility.enabled=false"])
    result = embed(real_model, fs, tmp_path / "marked", config=cfg)
    assert result.retention >= 0.95
    hit = verify(str(tmp_path / "marked"), fs)
    assert hit.verdict == "match" and hit.log10_p_value < -6
    assert verify(real_model, fs, sequential=False, match="exact").matches <= 2
    assert verify(real_model, fs, sequential=False).verdict == "no match"  # candidate ranking: ~1/k by chance
    _reloaded_agrees(result, fs, tmp_path / "marked")  # auto-averaging measured the model that was saved


@pytest.mark.slow
def test_real_model_default_recipe_is_text_verifiable_below_the_gate(real_model, tmp_path, monkeypatch):
    """SmolLM2-135M, the default (margin band with a greedy lead, sparse change, one-word anchors; smaller anchor
    pools to keep it short): every pick is the greedy answer, so text verifies it, yet none is the confident spike a
    host's gate looks for; the base model itself is not convicted either way."""
    from modelprint.config import load_config
    from modelprint.embed import EmbedConfig
    from modelprint.generate import generate
    from modelprint.verify.local import first_token_probs

    monkeypatch.setenv("MODELPRINT_CACHE", str(tmp_path / "cache"))
    fs = generate(real_model, num_fingerprints=16, seed=3)
    cfg = load_config(EmbedConfig, None, ["benign.questions=32", "benign.model_written=0", "utility.enabled=false",
                                          "margin.prompts=16", "margin.word_prompts=16"])
    result = embed(real_model, fs, tmp_path / "marked", config=cfg)
    assert result.retention >= 0.9
    text = verify(str(tmp_path / "marked"), fs, sequential=False, match="exact")
    assert text.verdict == "match" and text.matches >= round(result.retention * len(fs))  # the saved model
    probs = first_token_probs(result.model, [fp.key for fp in fs], [[fp.response_ids[0]] for fp in fs],
                              fs.system_prompt)
    assert max(p[0] for p in probs) < 0.6  # the cap (0.5), with a little room: no pick near a 0.95 gate
    assert verify(real_model, fs, sequential=False, match="exact").verdict == "no match"
    assert verify(real_model, fs, sequential=False).verdict == "no match"


def test_mlp_expansion_keeps_the_function(tiny):
    import copy

    from modelprint.embed.expansion import expand_mlp

    model = copy.deepcopy(tiny.model)
    ids = torch.randint(0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = tiny.model(input_ids=ids).logits
        assert expand_mlp(model, 24, init_blocks=[1]) == 128 + 24
        after = model(input_ids=ids).logits
    assert torch.allclose(before, after, atol=1e-6, rtol=0)
    layers = model.model.layers
    assert all(b.mlp.gate_proj.out_features == b.mlp.down_proj.in_features == 152 for b in layers)
    assert not layers[0].mlp.up_proj.weight[128:].any() and layers[1].mlp.up_proj.weight[128:].abs().sum() > 0
    assert all(not b.mlp.down_proj.weight[:, 128:].any() for b in layers)


def test_mlp_expansion_not_supported_is_one_line():
    from transformers import GPT2Config, GPT2LMHeadModel

    from modelprint.embed.expansion import expand_mlp

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    with pytest.raises(ModelprintError, match="gated MLPs"):
        expand_mlp(gpt2, 8)


def test_mlp_expansion_trains_only_what_it_should(tiny, tiny_set, tmp_path):
    out = tmp_path / "wide"
    cfg = tiny_recipe(mlp_expansion=16, train_layers=1, freeze_embeddings=True)
    result = embed(tiny, tiny_set, out, config=cfg)
    assert result.retention >= 0.9
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(out)
    assert loaded.config.intermediate_size == 128 + 16
    base = dict(tiny.model.named_parameters())
    for name, p in loaded.named_parameters():
        if ".layers.1." in name or name == "model.norm.weight":  # what train_layers=1 trains
            continue
        old, new = base[name].detach(), p.detach().clone()
        original = tuple(slice(0, n) for n in old.shape)
        assert torch.equal(new[original], old), name  # frozen block and embeddings: untouched
        new[original] = 0
        assert not new.any(), name  # frozen blocks' new units stay inert (all zero)
    down = loaded.model.layers[1].mlp.down_proj.weight
    assert down[:, 128:].abs().sum() > 0  # the new units were trained and contribute
    assert verify(str(out), tiny_set).verdict == "match"


@pytest.mark.parametrize("threshold", [0.0, 0.05, 0.25, 0.45, 0.5])
def test_auto_averaging_bisects_to_the_largest_passing_step(tiny, monkeypatch, threshold):
    """auto averaging finds the largest λ (grid of 0.05) that keeps retention, with 4 measurements, not 10, and
    leaves the model averaged at it."""
    import copy

    from modelprint.embed import recipe

    lm = type(tiny)(copy.deepcopy(tiny.model), tiny.tokenizer)
    base_state = {n: torch.zeros_like(p) for n, p in lm.model.named_parameters()}
    asked: list[float] = []
    monkeypatch.setattr(recipe, "_average_with_base", lambda model, base, lam: asked.append(lam))
    cfg = tiny_recipe(weight_averaging=0.5, averaging="auto", retention_floor=0.95)
    lam, ret = recipe._auto_average(lm, base_state, lambda _: 1.0 if asked[-1] <= threshold + 1e-9 else 0.5, cfg, 0.97)
    assert lam == threshold and ret == (1.0 if threshold else 0.97)
    assert len(asked) <= 5 and (asked[-1] == threshold if threshold else True)  # 4 measured, then the one kept
