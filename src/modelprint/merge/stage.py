"""``merge()``: validate the config, load and check the parents, run the method, write the model atomically."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Optional, Union

import torch

from modelprint.errors import ConfigError, ModelprintError
from modelprint.io import atomic_directory, check_output_path
from modelprint.merge.checks import check_compatible
from modelprint.merge.config import MergeConfig, ModelSpec, as_merge_config
from modelprint.merge.blueprint import MergeMethod, get_method
from modelprint.models import LoadedModel, default_device, load_model, weights_hash

log = logging.getLogger(__name__)


def _load(spec: ModelSpec, device: torch.device, role: str) -> LoadedModel:
    loaded = load_model(spec, device=device)
    log.info("loaded %s %s", role, loaded.source)
    return loaded


def merge(config: Union[MergeConfig, str, Path, dict], out: Union[str, Path], overwrite: bool = False) -> Path:
    """Merge the configured models into a Hugging Face directory ``out``; return its path.

    Everything that can be checked without loading models is checked first, so a bad config fails
    in milliseconds; the output appears only complete (atomic rename) or not at all.
    """
    cfg = as_merge_config(config)
    out = Path(out)
    method = get_method(cfg.method, cfg.parameters)
    weights = method.check_weights([m.weight for m in cfg.models])
    if method.needs_base and cfg.base_model is None:
        raise ConfigError(f"merge method '{cfg.method}' needs a base_model")
    if not method.needs_base and cfg.base_model is not None:
        raise ConfigError(f"merge method '{cfg.method}' does not use a base_model (remove it from the config)")
    check_output_path(out, overwrite)
    try:
        device = torch.device(cfg.device) if cfg.device else default_device()
    except RuntimeError as exc:
        raise ConfigError(f"invalid device '{cfg.device}': {exc}") from None

    models = [_load(m.model, device, f"model {i}") for i, m in enumerate(cfg.models)]
    base = _load(cfg.base_model, device, "base") if cfg.base_model is not None else None
    check_compatible(models + ([base] if base is not None else []))

    start = time.perf_counter()
    with torch.no_grad():
        merged = method.merge(models, weights, base, device)
    seconds = time.perf_counter() - start
    log.info("%s merge took %.1f s", cfg.method, seconds)
    _write(out, overwrite, merged, method, cfg, models, weights, base, seconds)
    return out


def _parent(m: LoadedModel, weight: Optional[float] = None) -> dict:
    entry = {"source": m.source, "model_hash": m.model_hash, "tokenizer_hash": m.tokenizer_hash}
    if weight is not None:
        entry["weight"] = weight
    return entry


def _write(out: Path, overwrite: bool, merged: torch.nn.Module, method: MergeMethod, cfg: MergeConfig,
           models: list[LoadedModel], weights: list[float], base: Optional[LoadedModel], seconds: float) -> None:
    manifest = {
        "kind": "modelprint.merge",
        "method": cfg.method,
        "paper": method.source,
        "parameters": method.params.model_dump(mode="json"),
        "models": [_parent(m, w) for m, w in zip(models, weights)],
        "base_model": _parent(base) if base is not None else None,
        "merged_model_hash": weights_hash(merged),
        "seconds": round(seconds, 2),
    }
    with atomic_directory(out, overwrite) as tmp:
        try:
            merged.save_pretrained(tmp, safe_serialization=True)
            models[0].tokenizer.save_pretrained(tmp)
        except Exception as exc:
            raise ModelprintError(f"could not save the merged model: {type(exc).__name__}: {exc}") from None
        (tmp / "modelprint.json").write_text(json.dumps(manifest, indent=2) + "\n")
        (tmp / "README.md").write_text(model_card(manifest))


def model_card(manifest: dict) -> str:
    """A short Hugging Face model card naming the parents and the method."""
    lines = ["---", "library_name: transformers", "tags: [merge, modelprint]", "---", "",
             "# Merged model", "",
             f"Produced by `modelprint merge` with method **{manifest['method']}**"
             + (f" ({manifest['paper']})." if manifest["paper"] else "."), "", "## Parents", ""]
    for p in manifest["models"]:
        lines.append(f"- `{p['source']}` weight {p['weight']:.4g} ({p['model_hash']})")
    if manifest["base_model"]:
        lines.append(f"- base model: `{manifest['base_model']['source']}` ({manifest['base_model']['model_hash']})")
    lines += ["", "## Parameters", "", "```json", json.dumps(manifest["parameters"], indent=2), "```", "",
              "See `modelprint.json` for the machine-readable manifest.", ""]
    return "\n".join(lines)
