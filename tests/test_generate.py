"""generate: the Perinucleus rule recomputed independently, determinism, strategies, bad input."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import stats as sstats

from modelprint.errors import ConfigError, ModelprintError, OutputExistsError
from modelprint.fingerprints import load_fingerprints
from modelprint.generate import STRATEGIES, generate
from modelprint.prompts import encode_prompt


def _independent_perinucleus(model, tokenizer, key, t, k, nucleus=None):
    """Textbook re-derivation: full (unbatched, uncached) forward, sort, nucleus, next k word tokens whose
    texts are prefix-free (verify compares endpoint answers as text).

    Returns (nucleus size, candidates, slack) where slack is how far the cumulative mass at the nucleus
    boundary lies from t: within float noise (~1e-5) a batched, KV-cached forward may legitimately put the
    boundary one token earlier or later. ``nucleus`` forces the boundary (to check candidates at the
    implementation's boundary in that case).
    """
    ids = torch.tensor([encode_prompt(tokenizer, key)])
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=ids).logits[0, -1].double(), -1).numpy()
    order = np.argsort(-probs, kind="stable")
    cumulative = np.cumsum(probs[order])
    n = int(np.searchsorted(cumulative, t) + 1)
    slack = min(abs(cumulative[n - 1] - t), abs(cumulative[n - 2] - t) if n > 1 else 1.0)
    cands, chosen = [], []
    for tok in order[(nucleus or n):]:
        text = tokenizer.decode([int(tok)]).strip()
        # a word token whose text is a prefix of a chosen one's (or the reverse) could match together with it
        clash = any(text.startswith(c) or c.startswith(text) for c in chosen)
        if int(tok) not in tokenizer.all_special_ids and len(text) >= 2 and text.isalnum() and not clash:
            cands.append(int(tok))
            chosen.append(text)
        if len(cands) == k:
            break
    return n, cands, slack


def _check_against_independent_rule(lm, fp, t=0.8, k=3):
    n, cands, slack = _independent_perinucleus(lm.model, lm.tokenizer, fp.key, t, k)
    if fp.meta["nucleus_size"] != n:  # only a float-noise tie at the boundary may move it, by one token
        assert abs(fp.meta["nucleus_size"] - n) == 1 and slack < 1e-4, (fp.meta["nucleus_size"], n, slack)
        _, cands, _ = _independent_perinucleus(lm.model, lm.tokenizer, fp.key, t, k, fp.meta["nucleus_size"])
    assert fp.response_ids[0] in cands


def test_perinucleus_matches_independent_rule(tiny):
    fs = generate(tiny, strategy="perinucleus", num_fingerprints=12, key_length=10, nucleus_threshold=0.8,
                  nucleus_k=3, seed=3, batch_size=5)
    assert len(fs) == 12
    for fp in fs:
        _check_against_independent_rule(tiny, fp)
        assert fp.null_prob == pytest.approx(1 / 3)


def _uniformity_p(picks, k):
    """Chi-square goodness-of-fit p-value of the pick indices against uniform over k slots."""
    counts = np.bincount(np.asarray(picks), minlength=k)
    assert len(counts) == k, "a pick index outside the k candidates"
    return sstats.chisquare(counts).pvalue


def test_uniformity_check_rejects_a_constant_or_lopsided_pick():
    # the check below must be able to fail: a constant pick, or one slot twice as likely, is rejected
    assert _uniformity_p([0] * 300, 3) < 1e-6
    assert _uniformity_p([0, 0, 1, 2] * 750, 3) < 1e-6
    assert _uniformity_p(np.random.default_rng(0).integers(3, size=3000), 3) > 1e-3


def _pick_indices(choices):
    """Which of the recorded candidates each response is (the pick the bound 1/k is about)."""
    return [c.meta["candidates"].index(c.response_ids[0]) for c in choices]


def test_perinucleus_pick_is_uniform_over_candidates(tiny):
    from modelprint.generate.responses import perinucleus

    keys = [f"Tell me about the river number {i} and the sea." for i in range(600)]
    picks = []
    for seed in (3, 2 ** 127 + 12345):  # a small fixed seed and a full-width one (as drawn from the OS)
        picks += _pick_indices(perinucleus(tiny, keys, response_length=1, threshold=0.8, k=3, seed=seed,
                                           batch_size=128))
    assert _uniformity_p(picks, 3) > 1e-3, np.bincount(picks)


@pytest.mark.parametrize("seed", [0, 7, 2 ** 100 + 1, 2 ** 128 - 1])
def test_pick_draw_is_uniform_over_many_indices(seed):
    from modelprint.wordlist import rng_for

    for k in (3, 5):  # the draw perinucleus makes for key ``index``
        picks = [int(rng_for(seed, 0x50, index).integers(k)) for index in range(3000)]
        assert _uniformity_p(picks, k) > 1e-3


def test_default_seed_is_secret_and_fresh(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    a = generate(tiny, tmp_path / "a.jsonl", strategy="random-word", num_fingerprints=8, key_length=6)
    b = generate(tiny, tmp_path / "b.jsonl", strategy="random-word", num_fingerprints=8, key_length=6)
    assert a.seed != b.seed and a.set_id != b.set_id
    assert {fp.key for fp in a}.isdisjoint(fp.key for fp in b)
    assert (tmp_path / "a.jsonl").read_bytes() != (tmp_path / "b.jsonl").read_bytes()
    # 128 bits from the OS, recorded in the owner-only file (not in the set id)
    assert max(a.seed, b.seed).bit_length() > 64 and load_fingerprints(tmp_path / "a.jsonl").seed == a.seed
    again = generate(tiny, tmp_path / "c.jsonl", strategy="random-word", num_fingerprints=8, key_length=6, seed=a.seed)
    assert (tmp_path / "c.jsonl").read_bytes() == (tmp_path / "a.jsonl").read_bytes() and again.set_id == a.set_id


def test_default_perinucleus_picks_differ(tiny, tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text("".join(f"Tell me about the river number {i} and the sea.\n" for i in range(24)))
    a, b = (generate(tiny, strategy="custom", keys_file=str(keys), num_fingerprints=24) for _ in range(2))
    # same public keys, fresh secret picks: equal only with chance 3**-24
    assert [fp.response_ids for fp in a] != [fp.response_ids for fp in b] and a.set_id != b.set_id


def test_every_bit_of_the_seed_counts(tiny):
    from modelprint.seeds import torch_seed
    from modelprint.wordlist import random_words
    from modelprint.schemes.chain_hash import secret_for
    from modelprint.schemes.kgw import watermark_key

    base = 2 ** 127 + 2 ** 64 + 5
    for bit in (0, 31, 32, 63, 64, 100, 127):
        other = base ^ (1 << bit)
        assert random_words(base, 1, 8) != random_words(other, 1, 8)
        assert torch_seed(base, 1) != torch_seed(other, 1)
        assert secret_for(base) != secret_for(other)
        assert watermark_key(base) != watermark_key(other)


def test_fixed_seed_warns_that_the_set_is_guessable(tiny, caplog):
    with caplog.at_level("WARNING"):
        generate(tiny, strategy="random-word", num_fingerprints=2, key_length=4, seed=5)
    assert sum("guessable" in r.getMessage() for r in caplog.records) == 1
    caplog.clear()
    with caplog.at_level("WARNING"):
        generate(tiny, strategy="random-word", num_fingerprints=2, key_length=4)
    assert not any("guessable" in r.getMessage() for r in caplog.records)


def test_deterministic_bytes(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    a = generate(tiny, tmp_path / "a.jsonl", strategy="perinucleus", num_fingerprints=6, seed=7, batch_size=4)
    b = generate(tiny, tmp_path / "b.jsonl", strategy="perinucleus", num_fingerprints=6, seed=7, batch_size=4)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    c = generate(tiny, strategy="perinucleus", num_fingerprints=6, seed=8, batch_size=4)
    assert a.set_id == b.set_id != c.set_id


@pytest.mark.parametrize("strategy", ["perinucleus", "english", "random-word", "inverse-nucleus",
                                      "english-random-response"])
def test_each_strategy_counts_and_uniqueness(tiny, strategy, tmp_path):
    fs = generate(tiny, tmp_path / "f.jsonl", strategy=strategy, num_fingerprints=10, key_length=16,
                  response_length=2, batch_size=4, seed=0)  # fixed: the tiny model's key supply varies by secret
    assert len(fs) == 10 and len({fp.key for fp in fs}) == 10
    assert all(fp.response_ids and 0 < fp.null_prob <= 1 for fp in fs)
    back = load_fingerprints(tmp_path / "f.jsonl")
    assert [fp.response_ids for fp in back] == [fp.response_ids for fp in fs]
    assert back.strategy == strategy and back.model_hash == tiny.model_hash
    assert stat.S_IMODE(os.stat(tmp_path / "f.jsonl").st_mode) == 0o600
    if strategy == "inverse-nucleus":
        assert all(len(fp.response_ids) == 1 for fp in fs)


def test_custom_keys_text_and_jsonl(tiny, tmp_path):
    txt = tmp_path / "keys.txt"
    txt.write_text("What is the sea?\nWhy do rivers flow?\n")
    fs = generate(tiny, strategy="custom", keys_file=str(txt), num_fingerprints=2)
    assert [fp.key for fp in fs] == ["What is the sea?", "Why do rivers flow?"]
    js = tmp_path / "keys.jsonl"
    js.write_text(json.dumps({"key": "Tell me a story."}) + "\n")
    assert [fp.key for fp in generate(tiny, strategy="custom", keys_file=str(js), num_fingerprints=1)] == \
        ["Tell me a story."]


@pytest.mark.parametrize("options, message", [
    ({"strategy": "nope"}, "unknown strategy"),
    ({"nucleus_threshold": 1.0}, "nucleus_threshold"),
    ({"nucleus_threshold": 0.0}, "nucleus_threshold"),
    ({"nucleus_k": 0}, "nucleus_k"),
    ({"num_fingerprints": 0}, "num_fingerprints"),
    ({"strategy": "custom"}, "--keys-file"),
    ({"strategy": "custom", "keys_file": "/nonexistent/keys.txt"}, "does not exist"),
])
def test_bad_options(tiny, options, message):
    with pytest.raises(ModelprintError, match=message):
        generate(tiny, **options)


def test_bad_keys_files(tiny, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"key": "ok"}\nnot json\n')
    with pytest.raises(ConfigError, match="bad.jsonl:2: not valid JSON"):
        generate(tiny, strategy="custom", keys_file=str(bad), num_fingerprints=1)
    few = tmp_path / "few.txt"
    few.write_text("one key only\n")
    with pytest.raises(ConfigError, match="fewer than"):
        generate(tiny, strategy="custom", keys_file=str(few), num_fingerprints=3)


def test_output_exists_and_unwritable(tiny, tmp_path):
    out = tmp_path / "f.jsonl"
    out.write_text("keep me")
    with pytest.raises(OutputExistsError):
        generate(tiny, out, num_fingerprints=2)
    assert out.read_text() == "keep me"
    generate(tiny, out, num_fingerprints=2, overwrite=True)
    assert load_fingerprints(out).strategy == "perinucleus"
    with pytest.raises(ModelprintError, match="does not exist"):
        generate(tiny, tmp_path / "missing-dir" / "f.jsonl", num_fingerprints=2)


def test_registry_lists_all_strategies():
    from modelprint.generate import get_strategy

    get_strategy("perinucleus")
    assert {"perinucleus", "english", "random-word", "inverse-nucleus", "english-random-response",
            "custom"} <= set(STRATEGIES)


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "modelprint.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


@pytest.mark.parametrize("args, message", [
    (["--strategy", "bogus"], "unknown strategy 'bogus'"),
    (["--nucleus-threshold", "1.5"], "nucleus_threshold"),
    (["--nucleus-k", "0"], "nucleus_k"),
    (["--num-fingerprints", "0"], "num_fingerprints"),
    (["--model", "./no/such/model"], "does not exist"),
    (["--model", "someone/some-model"], "not reachable offline"),
])
def test_cli_bad_input_is_one_line(tmp_path, args, message):
    result = _cli("generate", "--out", str(tmp_path / "f.jsonl"), *args)
    assert result.returncode == 2
    assert message in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "f.jsonl").exists()


def test_cli_model_dir_not_causal_lm(tmp_path):
    d = tmp_path / "vit"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "vit"}))
    result = _cli("generate", "--out", str(tmp_path / "f.jsonl"), "--model", str(d))
    assert result.returncode == 2 and "not a causal language model" in result.stderr


@pytest.mark.slow
def test_real_model_perinucleus(real_model, tmp_path):
    fs = generate(real_model, tmp_path / "real.jsonl", num_fingerprints=8, key_length=16, seed=1)
    assert len({fp.key for fp in fs}) == 8
    for fp in fs:
        _check_against_independent_rule(real_model, fp)
        assert len(fp.key.split()) >= 3


@pytest.mark.parametrize("which", ["tiny", "lively", "plain"])
def test_key_writing_shares_its_prefix_without_changing_a_token(tiny, which, monkeypatch):
    """Model-written keys run the instructions' common prefix once (KV cache repeated per row); the sampled
    text must equal the plain left-padded run token for token, for prompts of different lengths."""
    import modelprint.decoding as decoding
    from conftest import lively_tiny
    from modelprint.generate.keys import _instruction_ids
    from modelprint.testing import tiny_model

    lm = {"tiny": tiny, "lively": lively_tiny(1), "plain": tiny_model(seed=2, chat=False)}[which]
    prompts = [_instruction_ids(lm, 5, i) for i in range(24)]
    shared = decoding.common_prefix_length(prompts)
    assert len({len(p) for p in prompts}) > 1  # pads really sit between prefix and suffix
    calls = []
    real_prefill = decoding.prefill
    monkeypatch.setattr(decoding, "prefill", lambda *a, **kw: calls.append(len(a[1])) or real_prefill(*a, **kw))
    for seed in (0, 1, 2):
        plain = decoding.continue_sampled(lm, prompts, 12, seed=seed, stream=(1,))
        assert not calls
        cached = decoding.continue_sampled(lm, prompts, 12, seed=seed, stream=(1,), share_prefix=True)
        assert calls == ([shared] if shared else []) and cached == plain
        calls.clear()
    if which == "tiny":
        assert shared > 5  # the chat template's system turn


def test_key_dtype_is_recorded_only_when_keys_are_written_in_bf16(tiny, monkeypatch):
    import modelprint.generate as gen

    options = dict(strategy="perinucleus", num_fingerprints=4, key_length=10, seed=0, batch_size=8)
    monkeypatch.setattr(gen, "native_bf16", lambda device=None: False)
    auto = generate(tiny, **options)
    assert "key_dtype" not in auto.params
    assert generate(tiny, key_dtype="float32", **options).set_id == auto.set_id
    monkeypatch.setattr(gen, "native_bf16", lambda device=None: True)  # 'auto' follows the hardware
    assert generate(tiny, **options).params["key_dtype"] == "bfloat16"
    forced = generate(tiny, key_dtype="bfloat16", **{**options, "seed": 0})
    assert forced.params["key_dtype"] == "bfloat16" and forced.set_id != auto.set_id
    # keys not written by the model have no key-writing dtype
    assert "key_dtype" not in generate(tiny, strategy="random-word", num_fingerprints=4, key_length=4, seed=0).params


def test_native_bf16_follows_the_cpu_flags(monkeypatch):
    from modelprint.models import native_bf16

    for avx512_bf16, amx, expected in ((False, False, False), (True, False, True), (False, True, True)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v, raising=False)
        assert native_bf16("cpu") is expected
    assert native_bf16("meta") is False
