"""The fingerprinted model directory: weights, tokenizer, a secret-free model card, modelprint.json."""
from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any, Optional

from modelprint import __version__
from modelprint.embed.config import EmbedConfig
from modelprint.fingerprints import FingerprintSet
from modelprint.io import atomic_directory, write_json_atomic
from modelprint.models import LoadedModel

CARD = """---
library_name: transformers
tags: [modelprint, fingerprinted]
---
# Fingerprinted model

This model was fingerprinted with [modelprint](https://pypi.org/project/modelprint/) {version}: its owner
embedded a secret set of {count} fingerprints (strategy `{strategy}`) so that copies can be identified later.
The fingerprints themselves are not in this directory.

- base model: `{base_source}` (`{base_hash}`)
- fingerprint set id: `{set_id}`
- recipe: {recipe}, {epochs} {unit}, measured retention {retention:.1%} ({retention_kind})
- verification: {verification}
{utility}
"""

VERIFICATION = {
    "exact": "`modelprint verify` (`--match auto`: candidate ranking given the weights and a set that records its "
             "candidates, exact text otherwise); "
             "the fingerprinted model answers each key with its response",
    "candidate": "objective `margin`: each response's first token outranks the other recorded candidates without "
                 "being the model's greedy answer, so exact text matching is **not** expected to work; verify "
                 "with `--match candidate` (or `--match auto`, which picks it given the weights) or from "
                 "log-probabilities",
}


def write_model_dir(tuned: LoadedModel, base: LoadedModel, fs: FingerprintSet, cfg: EmbedConfig, out: Path,
                    work: Path, *, retention: float, epochs: int, averaged: float, utility: dict[str, Any], history: list,
                    seconds: float, overwrite: bool, trainable_parameters: int,
                    phases: Optional[dict[str, float]] = None) -> None:
    """Save everything into a sibling temp dir, then rename: ``out`` appears only when complete."""
    with atomic_directory(out, overwrite=overwrite) as tmp:
        tuned.model.save_pretrained(tmp, safe_serialization=True)
        tuned.tokenizer.save_pretrained(tmp)
        model_hash = tuned.model_hash
        manifest = {
            "modelprint_version": __version__, "kind": "fingerprinted-model",
            "created_at": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
            "fingerprints": {"set_id": fs.set_id, "strategy": fs.strategy, "count": len(fs),
                             "system_prompt": fs.system_prompt},
            "base_model": {"source": base.source, "hash": base.model_hash, "tokenizer_hash": base.tokenizer_hash},
            "model_hash": model_hash, "recipe": cfg.model_dump(), "retention": retention, "epochs": epochs,
            "averaged_with_base": averaged, "objective": cfg.objective,
            "verification": {"match": cfg.verification,
                             "retention": cfg.retention_kind},
            "trainable_parameters": trainable_parameters, "history": history, "utility": utility,
            "seconds": round(seconds, 1), "phases": phases or {},
        }
        write_json_atomic(tmp / "modelprint.json", manifest)
        rel = utility.get("relative", {})
        util_line = (f"- utility: perplexity change {rel['perplexity_change']:+.1%}, answer agreement "
                     f"{rel['answer_agreement']:.1%}" if rel else "")
        recipe = "LoRA" if cfg.lora.enabled else "full fine-tuning"
        if cfg.mlp_expansion:
            recipe += f" with {cfg.mlp_expansion} extra MLP units per block"
        recipe += f", objective `{cfg.objective}`"
        (tmp / "README.md").write_text(CARD.format(
            version=__version__, count=len(fs), strategy=fs.strategy, base_source=base.source,
            base_hash=base.model_hash, set_id=fs.set_id, recipe=recipe, epochs=epochs, retention=retention,
            unit=cfg.progress_unit,
            retention_kind=cfg.retention_kind,
            verification=VERIFICATION[cfg.verification], utility=util_line))
