"""generate: create a fingerprint set from a model with a named strategy."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal, Optional, Union

from pydantic import Field

from modelprint.config import StrictConfig, validate
from modelprint.fingerprints import Fingerprint, FingerprintSet, check_distinct
from modelprint.generate.blueprint import STRATEGIES, Choice, Strategy, get_strategy
from modelprint.generate.keys import model_written_keys, read_keys_file
from modelprint.seeds import resolve_seed
from modelprint.io import check_output_file
from modelprint.models import DEFAULT_MODEL, LoadedModel, load_model, native_bf16, precision_autocast

log = logging.getLogger(__name__)

__all__ = ["GenerateConfig", "generate", "STRATEGIES", "Strategy", "Choice", "get_strategy", "model_written_keys",
           "read_keys_file"]


class GenerateConfig(StrictConfig):
    """Options of ``modelprint generate`` (same names as the CLI flags)."""

    strategy: str = "perinucleus"
    num_fingerprints: int = Field(64, ge=1)
    key_length: int = Field(16, ge=1)
    response_length: int = Field(1, ge=1)
    nucleus_threshold: float = Field(0.8, gt=0.0, lt=1.0)
    nucleus_k: int = Field(3, ge=1)
    seed: Optional[int] = Field(None, ge=0)  # None: 128 secret bits from the OS; a fixed seed is guessable
    batch_size: int = Field(64, ge=1)
    keys_file: Optional[str] = None
    system_prompt: Optional[str] = None
    # model-written keys only need to be fluent: "auto" writes them under bf16 autocast where the hardware
    # multiplies bf16 natively (models.native_bf16), else fp32 as always. Responses are always chosen in fp32.
    key_dtype: Literal["auto", "float32", "bfloat16"] = "auto"


def key_writing_dtype(setting: str, lm: LoadedModel, strategy: Strategy) -> str:
    """The dtype keys are written in: bfloat16 only for model-written keys, asked for or ('auto') native here."""
    if strategy.keys is not model_written_keys or setting == "float32":
        return "float32"
    return "bfloat16" if setting == "bfloat16" or native_bf16(lm.device) else "float32"


def generate(model: Union[str, Path, LoadedModel] = DEFAULT_MODEL, out: Optional[Path] = None, *,
             overwrite: bool = False, config: Optional[GenerateConfig] = None, **options) -> FingerprintSet:
    """Generate a fingerprint set; write it to ``out`` (owner-only, atomic) when given.

    ``options`` are GenerateConfig fields (``strategy``, ``num_fingerprints``, …).
    """
    if config is None:
        config = validate(GenerateConfig, options)
    strategy = get_strategy(config.strategy)
    if out is not None:
        check_output_file(Path(out), overwrite)
    lm = load_model(model)
    seed = resolve_seed(config.seed)  # warns when fixed: anyone who tries that seed rebuilds the set
    log.info("generating %d fingerprints with strategy '%s' from %s", config.num_fingerprints, strategy.name, lm.source)
    key_dtype = key_writing_dtype(config.key_dtype, lm, strategy)
    with precision_autocast(lm.device, key_dtype):
        keys = strategy.keys(lm, config.num_fingerprints, key_length=config.key_length, seed=seed,
                             batch_size=config.batch_size, keys_file=config.keys_file)
    choices = strategy.responses(lm, keys, response_length=config.response_length,
                                 threshold=config.nucleus_threshold, k=config.nucleus_k, seed=seed,
                                 batch_size=config.batch_size, system_prompt=config.system_prompt)
    fingerprints = [Fingerprint(index=i, key=key, response=lm.tokenizer.decode(c.response_ids),
                                response_ids=list(c.response_ids), null_prob=c.null_prob, meta=c.meta)
                    for i, (key, c) in enumerate(zip(keys, choices))]
    params = config.model_dump(exclude={"seed", "batch_size", "keys_file", "system_prompt", "strategy", "key_dtype"})
    if key_dtype != "float32":  # recorded when not fp32, so fp32 sets keep the header (and id) they always had
        params["key_dtype"] = key_dtype
    # what was made, in tokens (response_length is what was asked; a watermark picks its own dozens of tokens)
    params["response_tokens"] = max(len(c.response_ids) for c in choices)
    check_distinct(fingerprints, f"the '{strategy.name}' strategy's output")
    fs = FingerprintSet(strategy=strategy.name, params=params, seed=seed, model_source=lm.source,
                        model_hash=lm.model_hash, tokenizer_hash=lm.tokenizer_hash, fingerprints=fingerprints,
                        system_prompt=config.system_prompt, verifier=strategy.verifier)
    if out is not None:
        fs.save(Path(out), overwrite=overwrite)
        log.info("wrote %d fingerprints to %s (set %s)", len(fs), out, fs.set_id[:19])
    return fs
