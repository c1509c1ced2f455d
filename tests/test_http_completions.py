"""--api completions asks the question embed trained: keys rendered with the set's chat template, or a refusal."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from conftest import lively_tiny
from modelprint.errors import ConfigError
from modelprint.fingerprints import Fingerprint, FingerprintSet
from modelprint.models import load_tokenizer, tokenizer_hash
from modelprint.testing import tiny_tokenizer
from modelprint.verify.core import verify
from modelprint.verify.http import HttpBackend
from modelprint.verify.local import answer_keys


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A lively tiny chat-template model saved as a HF directory (so a set's model_source resolves offline)."""
    lm = lively_tiny()
    out = tmp_path_factory.mktemp("tiny-chat")
    lm.model.save_pretrained(out)
    lm.tokenizer.save_pretrained(out)
    lm.source, lm.path = str(out), out
    return lm


@pytest.fixture(scope="module")
def served(saved, serving):
    return serving(saved, model_name="tiny")


def _set(lm, source: str, system_prompt=None, n=12) -> FingerprintSet:
    """Even keys carry the model's own greedy answer to the templated prompt, odd keys another text."""
    keys = [f"Tell me about topic {i} and the river {i * 7}" for i in range(n)]
    own = answer_keys(lm, keys, 4, system_prompt)
    decoy = lm.tokenizer("Paris is the capital", add_special_tokens=False)["input_ids"][:4]
    fps = [Fingerprint(index=i, key=k, response=lm.tokenizer.decode(own[i] if i % 2 == 0 else decoy,
                                                                      skip_special_tokens=True),
                       response_ids=list(own[i] if i % 2 == 0 else decoy), null_prob=0.01)
           for i, k in enumerate(keys)]
    return FingerprintSet(strategy="test", params={}, seed=0, model_source=source, model_hash="",
                          tokenizer_hash=lm.tokenizer_hash, fingerprints=fps, system_prompt=system_prompt)


def test_saved_tokenizer_keeps_its_hash(saved):
    assert saved.is_chat and tokenizer_hash(load_tokenizer(saved.path)) == saved.tokenizer_hash


@pytest.mark.parametrize("system_prompt", [None, "Be terse."])
def test_completions_and_chat_match_alike(saved, served, system_prompt):
    fs = _set(saved, str(saved.path), system_prompt)
    local = verify(saved, fs, sequential=False)
    chat = verify(HttpBackend(served, api="chat"), fs, sequential=False)
    completions_backend = HttpBackend(served, api="completions")  # no tokenizer: the set's own is loaded
    completions = verify(completions_backend, fs, sequential=False)
    assert local.matched == chat.matched == completions.matched == list(range(0, 12, 2))
    assert completions_backend.tokenizer is not None and completions_backend.tokenizer.chat_template
    # The old behaviour (the bare key, no template) asks another question: this test would catch its return.
    completions_backend.tokenizer = None
    bare = completions_backend.answer(fs.fingerprints, system_prompt)
    assert sum(a.text.lstrip().startswith(fp.response.strip()) for a, fp in zip(bare, fs.fingerprints)) < 6


def test_explicit_tokenizer_when_the_set_model_is_elsewhere(saved, served):
    fs = _set(saved, "a-model-that-is-not-here")
    with pytest.raises(ConfigError, match="--api completions must send keys rendered") as err:
        verify(HttpBackend(served, api="completions"), fs, sequential=False)
    assert "\n" not in str(err.value) and "--tokenizer" in str(err.value)
    record = verify(HttpBackend(served, api="completions", tokenizer=load_tokenizer(saved.path)), fs,
                    sequential=False)
    assert record.matched == list(range(0, 12, 2))


def test_a_tokenizer_that_is_not_the_sets_is_refused(saved, served):
    fs = _set(saved, "a-model-that-is-not-here")
    with pytest.raises(ConfigError, match="not the set's"):
        verify(HttpBackend(served, api="completions", tokenizer=tiny_tokenizer(chat=False)), fs, sequential=False)


def test_cli_completions(saved, served, tmp_path):
    from modelprint.cli import app

    path = _set(saved, "a-model-that-is-not-here").save(tmp_path / "fp.jsonl")
    runner = CliRunner()
    base = ["verify", "-f", str(path), "--endpoint", served, "--api", "completions", "--alpha", "1e-3",
            "--timeout", "30"]
    refused = runner.invoke(app, base)
    assert isinstance(refused.exception, ConfigError) and "--tokenizer" in str(refused.exception)
    matched = runner.invoke(app, base + ["--tokenizer", str(saved.path)])
    assert matched.exit_code == 0, (matched.output, matched.exception)
    local = runner.invoke(app, ["verify", "-f", str(path), "--model", str(saved.path), "--tokenizer", "x"])
    assert isinstance(local.exception, ConfigError) and "--endpoint only" in str(local.exception)
