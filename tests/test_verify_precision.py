"""Verification in bf16 with an fp32 re-check of close decisions: every decision equals the fp32 one.

The bf16 path is forced on CPU (emulated where the hardware has no bf16: slow but numerically real bf16).
"""
from __future__ import annotations

import copy
import math
import random

import pytest
import torch

from conftest import lively_tiny

from modelprint.errors import ConfigError
from modelprint.matching import candidate_match
from modelprint.prompts import encode_prompt
from modelprint.verify import LocalBackend, verify
from modelprint.verify import local
from modelprint.verify.local import Rechecks, answer_keys, first_token_probs, verify_precision
from modelprint.wordlist import words as word_list

N_KEYS = 48


@pytest.fixture(scope="module")
def lively():
    return lively_tiny(seed=1)


@pytest.fixture(scope="module")
def keys():
    rng = random.Random(7)
    words = word_list()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) for _ in range(N_KEYS)]


def _fp32_probs(lm, keys):
    every = list(range(len(lm.tokenizer)))
    return torch.tensor(first_token_probs(lm, keys, [every] * len(keys), batch_size=16))


def _candidates(probs: torch.Tensor, seed: int = 3) -> list[list[int]]:
    """Three tokens per key from its fp32 top 12: some lists far apart, some close together."""
    rng = random.Random(seed)
    order = probs.argsort(dim=-1, descending=True)[:, :12].tolist()
    return [rng.sample(row, 3) for row in order]


def _decisions(cands: list[list[int]], scores: list[list[float]]) -> list[tuple[bool, ...]]:
    """For each key, candidate_match with each candidate as our pick (the re-check must not depend on the pick)."""
    return [tuple(candidate_match(c, cs, s) for c in cs) for cs, s in zip(cands, scores)]


def _gap_errors(lm, keys, cands) -> list[float]:
    """|gap_bf16 - gap_fp32| over every candidate pair of every key (what the bound must exceed)."""
    errors = []
    f = first_token_probs(lm, keys, cands, batch_size=16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        b = first_token_probs(lm, keys, cands, batch_size=16)
    for fs, bs in zip(f, b):
        lf, lb = [math.log(x) for x in fs], [math.log(x) for x in bs]
        errors += [abs((lb[i] - lb[j]) - (lf[i] - lf[j])) for i in range(3) for j in range(i + 1, 3)]
    return errors


def test_auto_precision_follows_native_bf16(tiny, monkeypatch):
    monkeypatch.setattr(local, "native_bf16", lambda device=None: False)
    assert verify_precision("auto", tiny) == "float32" and LocalBackend(tiny).precision == "float32"
    assert verify_precision("bfloat16", tiny) == "bfloat16"  # forced: any hardware
    monkeypatch.setattr(local, "native_bf16", lambda device=None: True)
    assert verify_precision("auto", tiny) == "bfloat16" and verify_precision("float32", tiny) == "float32"
    with pytest.raises(ConfigError, match="unknown precision"):
        verify_precision("fp8", tiny)


def test_a_quantized_model_is_asked_in_float32_even_on_bf16_hardware(tiny, monkeypatch):
    """int8 kernels take float32 only: under bf16 autocast the stress suite's quantize-int8 row failed on a CPU with
    AVX512-BF16 ("expected scalar type Float but found BFloat16"). auto keeps such a model in float32."""
    from torch.ao.quantization import quantize_dynamic

    from modelprint.models import LoadedModel
    from modelprint.verify import verify

    monkeypatch.setattr(local, "native_bf16", lambda device=None: True)
    q = LoadedModel(quantize_dynamic(copy.deepcopy(tiny.model), {torch.nn.Linear}, dtype=torch.qint8), tiny.tokenizer)
    assert verify_precision("auto", tiny) == "bfloat16" and verify_precision("auto", q) == "float32"
    from modelprint.generate import generate

    fs = generate(tiny, strategy="random-word", num_fingerprints=4, seed=3)
    assert verify(q, fs, sequential=False, alpha=1e-3).access["precision"] == "float32"


def test_this_machine_defaults_to_float32_unless_native(tiny):
    from modelprint.models import native_bf16

    assert LocalBackend(tiny).precision == ("bfloat16" if native_bf16(tiny.device) else "float32")


def test_candidate_decisions_equal_fp32_and_close_keys_are_rechecked(lively, keys, monkeypatch):
    probs = _fp32_probs(lively, keys)
    cands = _candidates(probs)
    fp32 = first_token_probs(lively, keys, cands, batch_size=16)
    # the shipped bound (measured on the real model) first
    rechecks = Rechecks()
    bf16 = first_token_probs(lively, keys, cands, batch_size=16, precision="bfloat16", rechecks=rechecks)
    assert _decisions(cands, bf16) == _decisions(cands, fp32)
    assert rechecks.keys == N_KEYS
    # then a bound 4x this tiny model's own largest bf16 error, which leaves some keys to bf16 alone
    bound = 4 * max(_gap_errors(lively, keys, cands))
    monkeypatch.setattr(local, "BF16_GAP_BOUND", bound)
    rechecks = Rechecks()
    bf16 = first_token_probs(lively, keys, cands, batch_size=16, precision="bfloat16", rechecks=rechecks)
    assert _decisions(cands, bf16) == _decisions(cands, fp32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain_bf16 = first_token_probs(lively, keys, cands, batch_size=16)
    close = sum(local.top_gap(s) < bound for s in plain_bf16)
    assert 0 < rechecks.rechecked == close < N_KEYS  # the close keys, no others
    assert any(s != f for s, f in zip(bf16, fp32))  # the rest really were bf16 scores


@pytest.mark.parametrize("new_tokens", [1, 4])
def test_greedy_answers_equal_fp32(lively, keys, new_tokens):
    fp32 = answer_keys(lively, keys, new_tokens, batch_size=16)
    rechecks = Rechecks()
    bf16 = answer_keys(lively, keys, new_tokens, batch_size=16, precision="bfloat16", rechecks=rechecks)
    assert bf16 == fp32 and rechecks.keys == N_KEYS


def near_tie(lm, key: str):
    """Make token b beat the model's answer a to ``key`` by a relative 2^-12 in fp32 while their head rows are
    the same bf16 numbers: bf16 sees an exact tie (argmax → the lower id a; a candidate tie → a miss)."""
    prompt = encode_prompt(lm.tokenizer, key)
    weight = lm.model.get_output_embeddings().weight
    with torch.no_grad():
        weight.copy_(weight.bfloat16().float())  # every row exactly representable in bf16
        logits = lm.model(input_ids=torch.tensor([prompt])).logits[0, -1]
        a = int(logits.argmax())
        special = set(lm.tokenizer.all_special_ids)
        b = next(t for t in range(a + 1, len(lm.tokenizer)) if t not in prompt and t not in special)
        weight[b] = weight[a] * (1 + math.copysign(2 ** -12, float(logits[a])))
    return a, b


def test_near_tie_is_caught_by_the_recheck(monkeypatch):
    lm = lively_tiny(seed=1)
    key = "winter river music quietly"
    a, b = near_tie(lm, key)
    fp32_answer = answer_keys(lm, [key], 3)
    assert fp32_answer[0][0] == b
    fp32_scores = first_token_probs(lm, [key], [[a, b]])
    assert candidate_match(b, [a, b], fp32_scores[0])  # fp32: b strictly wins
    # without the re-check (every gap counts as wide) bf16 decides otherwise: the case is a real near-tie
    monkeypatch.setattr(local, "BF16_GAP_BOUND", -math.inf)
    assert answer_keys(lm, [key], 3, precision="bfloat16")[0][0] == a
    assert answer_keys(lm, [key], 1, precision="bfloat16")[0] == [a]
    assert not candidate_match(b, [a, b], first_token_probs(lm, [key], [[a, b]], precision="bfloat16")[0])
    monkeypatch.undo()
    rechecks = Rechecks()
    assert answer_keys(lm, [key], 3, precision="bfloat16", rechecks=rechecks) == fp32_answer
    assert answer_keys(lm, [key], 1, precision="bfloat16", rechecks=rechecks) == [fp32_answer[0][:1]]
    scores = first_token_probs(lm, [key], [[a, b]], precision="bfloat16", rechecks=rechecks)
    assert candidate_match(b, [a, b], scores[0])
    assert rechecks == Rechecks(keys=3, rechecked=3)


@pytest.mark.parametrize("strategy, match", [("perinucleus", "candidate"), ("random-word", "exact")])
def test_verify_records_precision_and_equals_fp32(tiny, lively, strategy, match):
    from modelprint.generate import generate

    fs = generate(tiny, strategy=strategy, num_fingerprints=12, key_length=10, seed=3, batch_size=5)  # asked of lively: same tokenizer
    records = {p: verify(LocalBackend(lively, batch_size=8, precision=p), fs, match=match, alpha=0.5,
                         sequential=False) for p in ("float32", "bfloat16")}
    f, b = records["float32"], records["bfloat16"]
    assert (b.verdict, b.matched, b.log10_p_value) == (f.verdict, f.matched, f.log10_p_value)
    assert f.access["precision"] == "float32" and "fp32_rechecks" not in f.access
    assert b.access["precision"] == "bfloat16" and 0 <= b.access["fp32_rechecks"] <= 12


@pytest.mark.slow
def test_real_model_bf16_with_recheck_decides_as_fp32(real_model):
    """32 fresh Perinucleus keys on SmolLM2-135M: candidate ranking (each candidate as the pick) and the greedy
    first token, bf16 with re-check against fp32 (the bound is the measured one, not tuned here)."""
    from modelprint.generate import generate

    fs = generate(real_model, strategy="perinucleus", num_fingerprints=32, seed=0)  # bf16 is emulated on AVX2: slow
    keys = [fp.key for fp in fs]
    cands = [fp.meta["candidates"] for fp in fs]
    fp32 = first_token_probs(real_model, keys, cands)
    rechecks = Rechecks()
    bf16 = first_token_probs(real_model, keys, cands, precision="bfloat16", rechecks=rechecks)
    assert _decisions(cands, bf16) == _decisions(cands, fp32) and rechecks.keys == 32
    greedy = Rechecks()
    assert answer_keys(real_model, keys, 1, precision="bfloat16", rechecks=greedy) == answer_keys(real_model, keys, 1)
    print(f"re-checked in fp32: candidate {rechecks.rechecked}/32, greedy {greedy.rechecked}/32")
