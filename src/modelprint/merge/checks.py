"""Refuse to merge models that cannot be merged, with one line that says why."""
from __future__ import annotations

from typing import Any

from modelprint.errors import ModelprintError
from modelprint.models import LoadedModel

# Config fields that change the function or the parameter layout; anything else (names, dtype,
# generation defaults) may differ between a model and its fine-tuned copy.
STRUCTURAL_KEYS = ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                   "num_key_value_heads", "head_dim", "vocab_size", "tie_word_embeddings", "hidden_act",
                   "rms_norm_eps", "rope_theta", "rope_parameters", "rope_scaling", "attention_bias", "mlp_bias")


def _structure(model: LoadedModel) -> dict[str, Any]:
    cfg = model.model.config.to_dict()
    return {k: cfg.get(k) for k in STRUCTURAL_KEYS}


def check_compatible(models: list[LoadedModel]) -> None:
    """Same architecture (config structure and tensor shapes) and the same tokenizer, or ModelprintError."""
    first = models[0]
    ref, ref_shapes = _structure(first), {k: tuple(v.shape) for k, v in first.model.state_dict().items()}
    for other in models[1:]:
        got = _structure(other)
        for key in STRUCTURAL_KEYS:
            if got[key] != ref[key]:
                raise ModelprintError(f"cannot merge '{first.source}' and '{other.source}': architectures differ "
                                      f"({key} is {ref[key]!r} vs {got[key]!r})")
        shapes = {k: tuple(v.shape) for k, v in other.model.state_dict().items()}
        if shapes != ref_shapes:
            diff = sorted(set(shapes.items()) ^ set(ref_shapes.items()))[0][0]
            raise ModelprintError(f"cannot merge '{first.source}' and '{other.source}': "
                                  f"parameters differ (first at '{diff}')")
        if other.tokenizer_hash != first.tokenizer_hash:
            raise ModelprintError(f"cannot merge '{first.source}' and '{other.source}': tokenizers differ "
                                  "(vocabulary, special tokens or chat template)")
