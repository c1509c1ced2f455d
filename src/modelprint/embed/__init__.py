"""embed: write a fingerprint set into a model's weights, keep its utility, save a normal HF directory."""
from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Optional, Union


from modelprint.embed.benign import recipe_anchors
from modelprint.embed.config import EmbedConfig
from modelprint.embed.expansion import gated_mlps
from modelprint.embed.output import write_model_dir
from modelprint.embed.phases import Phases, describe
from modelprint.embed.recipe import run_recipe
from modelprint.errors import FingerprintFileError, ModelprintError
from modelprint.fingerprints import FingerprintSet, load_fingerprints
from modelprint.io import check_output_path
from modelprint.models import DEFAULT_MODEL, LoadedModel, is_out_of_memory, load_model

log = logging.getLogger(__name__)

__all__ = ["EmbedConfig", "EmbedResult", "embed", "gated_mlps"]


@dataclasses.dataclass
class EmbedResult:
    out: Optional[Path]
    model: LoadedModel
    retention: float
    epochs: int
    seconds: float
    utility: dict[str, Any]
    history: list[dict[str, float]]
    averaged: float = 0.0
    phases: dict[str, float] = dataclasses.field(default_factory=dict)  # wall seconds per phase of the run


def _check_compatible(fs: FingerprintSet, base: LoadedModel, force: bool) -> None:
    if fs.tokenizer_hash != base.tokenizer_hash and not force:
        raise FingerprintFileError("these fingerprints were made for another tokenizer; embedding them would "
                                   "train different tokens (pass --force to embed anyway)")
    if fs.model_hash != base.model_hash and not force:
        raise FingerprintFileError(f"these fingerprints were made from another model ({fs.model_hash[:19]}…, this "
                                   f"is {base.model_hash[:19]}…); pass --force to embed them anyway")


def embed(model: Union[str, Path, LoadedModel] = DEFAULT_MODEL, fingerprints: Union[str, Path, FingerprintSet] = "",
          out: Optional[Union[str, Path]] = None, *, config: Optional[EmbedConfig] = None, resume: bool = False,
          force: bool = False, overwrite: bool = False) -> EmbedResult:
    """Fine-tune ``fingerprints`` into ``model``; write ``out`` (a HF directory) only when complete."""
    cfg = config or EmbedConfig()
    start = time.perf_counter()
    phases = Phases()
    fs = fingerprints if isinstance(fingerprints, FingerprintSet) else load_fingerprints(Path(fingerprints))
    if cfg.objective == "margin":
        from modelprint.embed.margin import check_margin_set

        check_margin_set(fs)
    out_path = Path(out) if out is not None else None
    work: Optional[Path] = None
    if out_path is not None:
        check_output_path(out_path, overwrite)
        work = out_path.with_name(f".{out_path.name}.partial")
        if work.exists() and not resume:
            shutil.rmtree(work)
        work.mkdir(exist_ok=True)
    else:
        import tempfile

        work = Path(tempfile.mkdtemp(prefix="modelprint-embed-"))
    with phases("load"):
        base = load_model(model)
    _check_compatible(fs, base, force)

    utility: dict[str, Any] = {}
    reference = None
    if cfg.utility.enabled:
        from modelprint.embed.utility import measure_base

        with phases("utility"):
            reference, utility["base"] = measure_base(base, cfg.utility)
    with phases("anchors"):
        benign = recipe_anchors(base, cfg, fs)
    try:
        result = run_recipe(base, fs, cfg, work, benign, resume=resume, phases=phases)
    except RuntimeError as exc:
        if is_out_of_memory(exc):
            raise ModelprintError(f"not enough memory for batch size {cfg.batch_size}: lower batch_size, raise "
                                  "grad_accum, enable gradient_checkpointing, or use lora.enabled=true") from None
        raise
    tuned = LoadedModel(result.model, base.tokenizer, source=f"{base.source}+fingerprints")
    if cfg.utility.enabled:
        from modelprint.embed.utility import measure_tuned

        with phases("utility"):
            utility["fingerprinted"] = measure_tuned(tuned, reference, cfg.utility)
        utility["relative"] = {
            "perplexity_change": utility["fingerprinted"]["perplexity"] / utility["base"]["perplexity"] - 1.0,
            "answer_agreement": utility["fingerprinted"]["answer_agreement"]}
    seconds = time.perf_counter() - start
    by_phase = phases.report()  # taken with ``seconds``: the phases add up to it
    history = [dataclasses.asdict(h) for h in result.history]
    if out_path is not None:
        write_model_dir(tuned, base, fs, cfg, out_path, work, retention=result.retention, epochs=result.epochs,
                        averaged=result.averaged,
                        utility=utility, history=history, seconds=seconds, overwrite=overwrite,
                        trainable_parameters=result.trainable_parameters, phases=by_phase)
        tuned = dataclasses.replace(tuned, path=out_path, source=str(out_path))
    shutil.rmtree(work, ignore_errors=True)
    log.info("embedded %d fingerprints in %d %s (%.0f s): retention %.1f%%; time by phase: %s", len(fs),
             result.epochs, cfg.progress_unit, seconds, 100 * result.retention, describe(by_phase))
    return EmbedResult(out_path, tuned, result.retention, result.epochs, seconds, utility, history, result.averaged,
                       by_phase)
