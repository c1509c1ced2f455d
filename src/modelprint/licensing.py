"""``license issue``: a resumable flow generate → embed → register, with the ML steps injected.

Orchestration: it runs the generate and embed stages and stores each step's result through the registry's
licence records (:mod:`modelprint.registry.license`), so a run killed at any point resumes where it
stopped. The default steps import ``modelprint.generate`` / ``modelprint.embed`` at call time (heavy).
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable, Optional

from modelprint.errors import ModelprintError
from modelprint.fingerprints import FingerprintSet
from modelprint.registry import (Registry, complete_license, license_set, load_key, start_license,
                                 store_license_copy, store_license_set)

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class IssueContext:
    """What a step needs to know about the licence being issued (no secrets)."""

    license_id: int
    licensee: str
    model_name: str
    model_source: str
    model_hash: str
    copy_path: Path
    seed: Optional[int]  # None: the generate step draws a secret 128-bit seed from the OS (the default)
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


GenerateStep = Callable[[IssueContext], FingerprintSet]
"""Make a fresh fingerprint set for the licensee from ``ctx.model_source``."""
EmbedStep = Callable[[IssueContext, FingerprintSet, Path], str]
"""Write the fingerprinted copy to the given path (replacing any partial one); return its content hash."""


def default_generate(ctx: IssueContext) -> FingerprintSet:
    from modelprint.generate import generate

    return generate(ctx.model_source, seed=ctx.seed, **ctx.options.get("generate", {}))


def default_embed(ctx: IssueContext, fs: FingerprintSet, out: Path) -> str:
    """Fine-tune with :func:`modelprint.embed.embed`, resuming its own checkpoints after a kill."""
    from modelprint.embed import EmbedConfig, embed

    config = EmbedConfig(**ctx.options["embed"]) if ctx.options.get("embed") else None
    result = embed(ctx.model_source, fs, out=out, config=config, resume=True, overwrite=True)
    model = getattr(result, "model", None)
    model_hash = getattr(model, "model_hash", None)
    if isinstance(model_hash, str) and model_hash:
        return model_hash
    from modelprint.models import load_model

    return load_model(out).model_hash


def issue_license(reg: Registry, licensee: str, model: str, *, out_dir: Path, owner: Optional[str] = None,
                  seed: Optional[int] = None, generate_step: Optional[GenerateStep] = None,
                  embed_step: Optional[EmbedStep] = None, options: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Issue (or resume) the licence of ``licensee`` for base model ``model``; returns the licence record."""
    generate_step = generate_step or default_generate
    embed_step = embed_step or default_embed
    key = load_key()  # fail before any work if the owner cannot encrypt the new set
    out_dir = Path(out_dir)

    start = start_license(reg, licensee, model)
    license_id, done = start.license_id, start.steps_done
    if done:
        log.info("resuming licence #%d (done: %s)", license_id, ", ".join(done))
    copy_path = out_dir / f"{start.model_name}-{start.licensee}"
    ctx = IssueContext(license_id=license_id, licensee=start.licensee, model_name=start.model_name,
                       model_source=start.model_source, model_hash=start.model_hash, copy_path=copy_path,
                       seed=seed, options=options or {})

    if "generate" not in done:
        fs = generate_step(ctx)
        store_license_set(reg, start, fs, owner, key)
        log.info("licence #%d: fingerprint set generated", license_id)

    if "embed" not in done:
        fs = license_set(reg, license_id, key)
        out_dir.mkdir(parents=True, exist_ok=True)
        copy_hash = embed_step(ctx, fs, copy_path)
        store_license_copy(reg, license_id, copy_path, copy_hash)
        log.info("licence #%d: fingerprinted copy written to %s", license_id, copy_path)

    if not complete_license(reg, license_id):
        raise ModelprintError(f"licence #{license_id}: the fingerprinted copy '{copy_path}' is missing; "
                              "re-run 'license issue' to embed it again")
    return reg.show("licenses", license_id)
