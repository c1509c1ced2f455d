"""GGUF export: round trip through transformers' GGUF loader, CLI, refusals, and (when installed) llama.cpp."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from modelprint.errors import ModelprintError, OutputExistsError
from modelprint.export import ExportError, export_gguf, permute_qk
from modelprint.testing import tiny_model

# Logit tolerance per type, for a random tiny model whose logits are O(1).
TOLERANCE = {"f32": 1e-5, "f16": 5e-3, "q8_0": 5e-2}
LLAMA_CPP_PYTHON = os.environ.get("MODELPRINT_LLAMA_CPP_PYTHON", sys.executable)


def _has_llama_cpp() -> bool:
    if LLAMA_CPP_PYTHON == sys.executable:
        return importlib.util.find_spec("llama_cpp") is not None
    return subprocess.run([LLAMA_CPP_PYTHON, "-c", "import llama_cpp.server"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def lm():
    return tiny_model(seed=2)


@pytest.mark.parametrize("outtype", ["f32", "f16", "q8_0"])
def test_round_trip_through_transformers(lm, tmp_path, outtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = export_gguf(lm, tmp_path / f"m-{outtype}.gguf", outtype=outtype)
    text = "What is the capital of France? 2024"
    ids = torch.tensor([lm.tokenizer(text)["input_ids"]])
    back = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=path.name, dtype=torch.float32)
    with torch.no_grad():
        diff = (back(ids).logits - lm.model(ids).logits).abs().max().item()
    assert diff < TOLERANCE[outtype]
    tok = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
    assert tok(text, add_special_tokens=False)["input_ids"] == lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tok.chat_template == lm.tokenizer.chat_template
    assert not list(tmp_path.glob(".*partial*"))


def test_q8_0_is_smaller_than_f16(lm, tmp_path):
    sizes = {t: export_gguf(lm, tmp_path / f"{t}.gguf", outtype=t).stat().st_size for t in ("f32", "f16", "q8_0")}
    assert sizes["q8_0"] < sizes["f16"] < sizes["f32"]


def test_permutation_matches_llama_cpp_layout():
    """Rows of each head go from [first half | second half] to interleaved pairs, as llama.cpp's RoPE reads them."""
    w = np.arange(8, dtype=np.float32).reshape(8, 1)  # 2 heads of dim 4
    assert permute_qk(w, 2).ravel().tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_refusals(lm, tmp_path):
    out = export_gguf(lm, tmp_path / "m.gguf", outtype="f32")
    with pytest.raises(OutputExistsError):
        export_gguf(lm, out)
    with pytest.raises(ModelprintError, match="outtype"):
        export_gguf(lm, tmp_path / "x.gguf", outtype="q4_0")
    from transformers import GPT2Config, GPT2LMHeadModel

    from modelprint.models import LoadedModel

    gpt2 = LoadedModel(model=GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=len(lm.tokenizer))),
                       tokenizer=lm.tokenizer)
    with pytest.raises(ExportError, match="Llama"):
        export_gguf(gpt2, tmp_path / "g.gguf")


def test_cli_export(lm, tmp_path):
    from typer.testing import CliRunner

    from modelprint.cli import app

    lm.model.save_pretrained(tmp_path / "model")
    lm.tokenizer.save_pretrained(tmp_path / "model")
    result = CliRunner().invoke(app, ["export", str(tmp_path / "model"), "--gguf", str(tmp_path / "m.gguf"),
                                      "--outtype", "q8_0"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.gguf").stat().st_size > 0


@pytest.mark.skipif(not _has_llama_cpp(), reason="llama-cpp-python[server] is not installed "
                                                   "(set MODELPRINT_LLAMA_CPP_PYTHON to a python that has it)")
def test_llama_cpp_server_verifies_like_local(tmp_path):
    """The exported file under llama.cpp's OpenAI server answers the keys as the source model does."""
    from modelprint.fingerprints import Fingerprint, FingerprintSet
    from modelprint.serve import free_port
    from modelprint.verify.core import verify
    from modelprint.verify.http import HttpBackend
    from modelprint.verify.local import answer_keys

    lm = tiny_model(seed=1)
    with torch.no_grad():  # layers outweigh the tied embeddings: varied, non-blank answers
        for layer in lm.model.model.layers:
            layer.mlp.down_proj.weight.mul_(20)
            layer.self_attn.o_proj.weight.mul_(20)
    path = export_gguf(lm, tmp_path / "m.gguf", outtype="f32")
    keys = [f"Tell me about topic {i} and the river {i * 7}" for i in range(8)]
    own = answer_keys(lm, keys, 4, None)
    decoy = lm.tokenizer("Paris is the capital", add_special_tokens=False)["input_ids"][:4]
    fps = [Fingerprint(index=i, key=k, response=lm.tokenizer.decode(own[i] if i % 2 == 0 else decoy,
                                                                      skip_special_tokens=True),
                       response_ids=list(own[i] if i % 2 == 0 else decoy), null_prob=0.01)
           for i, k in enumerate(keys)]
    fs = FingerprintSet(strategy="test", params={}, seed=0, model_source=lm.source, model_hash="",
                        tokenizer_hash=lm.tokenizer_hash, fingerprints=fps)
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([LLAMA_CPP_PYTHON, "-m", "llama_cpp.server", "--model", str(path), "--host", "127.0.0.1",
                             "--port", str(port), "--n_ctx", "512", "--n_threads", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        import httpx

        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "llama_cpp.server did not start"
            time.sleep(0.3)
        local = verify(lm, fs, sequential=False)
        remote = verify(HttpBackend(f"http://127.0.0.1:{port}", max_retries=0, concurrency=1), fs, sequential=False)
        assert remote.matched == local.matched == [0, 2, 4, 6]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

