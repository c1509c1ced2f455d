"""``license issue``: a resumable flow generate → embed → register, with the ML steps injected.

Each step's result is committed with the step's name in ``licenses.steps_done`` in
one transaction, so a run killed at any point resumes where it stopped, and the
licence only becomes ``complete`` after the last step. The default steps import
``modelprint.generate`` / ``modelprint.embed`` at call time (they are heavy).
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable, Optional

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelprint.errors import ModelprintError
from modelprint.fingerprints import FingerprintSet
from modelprint.registry import secrets
from modelprint.registry.schema import LICENSE_COMPLETE, LICENSE_PENDING, BaseModel, License, Licensee, utcnow
from modelprint.registry.store import Registry

log = logging.getLogger(__name__)
STEPS = ("generate", "embed", "register")


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


def set_name_for(license_id: int, licensee: str, model: str) -> str:
    return f"license-{license_id}-{licensee}-{model}"[:200]


def _license_for(s: Session, license_id: int) -> License:
    row = s.scalar(select(License).where(License.id == license_id).with_for_update())
    assert row is not None
    return row


def _mark(row: License, step: str) -> None:
    if step not in row.steps_done:
        row.steps_done = [*row.steps_done, step]  # new list: JSON columns track assignment, not mutation


def issue_license(reg: Registry, licensee: str, model: str, *, out_dir: Path, owner: Optional[str] = None,
                  seed: Optional[int] = None, generate_step: Optional[GenerateStep] = None,
                  embed_step: Optional[EmbedStep] = None, options: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Issue (or resume) the licence of ``licensee`` for base model ``model``; returns the licence record."""
    generate_step = generate_step or default_generate
    embed_step = embed_step or default_embed
    key = secrets.load_key()  # fail before any work if the owner cannot encrypt the new set
    out_dir = Path(out_dir)

    def start(s: Session) -> tuple[int, list[str], str, str, str, str]:
        who = s.scalar(select(Licensee).where(Licensee.name == licensee))
        if who is None:
            raise ModelprintError(f"unknown licensee '{licensee}' (add it with 'modelprint registry add-licensee')")
        base = s.scalar(select(BaseModel).where(BaseModel.name == model))
        if base is None:
            raise ModelprintError(f"unknown model '{model}' (add it with 'modelprint registry add-model')")
        row = s.scalar(select(License).where(License.licensee_id == who.id, License.base_model_id == base.id))
        if row is None:
            row = License(licensee_id=who.id, base_model_id=base.id, status=LICENSE_PENDING, steps_done=[])
            s.add(row)
            s.flush()
        elif row.status == LICENSE_COMPLETE:
            raise ModelprintError(f"licensee '{licensee}' already holds complete licence #{row.id} for '{model}'")
        return row.id, list(row.steps_done), base.name, base.source, base.content_hash, who.name

    license_id, done, model_name, source, model_hash, who_name = reg.run(start)
    if done:
        log.info("resuming licence #%d (done: %s)", license_id, ", ".join(done))
    copy_path = out_dir / f"{model_name}-{who_name}"
    ctx = IssueContext(license_id=license_id, licensee=who_name, model_name=model_name, model_source=source,
                       model_hash=model_hash, copy_path=copy_path,
                       seed=seed, options=options or {})

    if "generate" not in done:
        fs = generate_step(ctx)

        def save_set(s: Session) -> None:
            row = _license_for(s, license_id)
            if "generate" in row.steps_done:  # a concurrent run got there first; keep its set
                return
            set_row = reg._insert_set(s, fs, set_name_for(license_id, who_name, model_name), owner, key)
            row.fingerprint_set_id = set_row.id
            _mark(row, "generate")

        reg.run(save_set)
        log.info("licence #%d: fingerprint set generated", license_id)

    set_id = reg.run(lambda s: _license_for(s, license_id).fingerprint_set_id)
    if "embed" not in done:
        fs = reg.resolve_set(int(set_id), key)
        out_dir.mkdir(parents=True, exist_ok=True)
        copy_hash = embed_step(ctx, fs, copy_path)

        def save_copy(s: Session) -> None:
            row = _license_for(s, license_id)
            row.copy_path, row.copy_hash = str(copy_path), str(copy_hash)
            _mark(row, "embed")

        reg.run(save_copy)
        log.info("licence #%d: fingerprinted copy written to %s", license_id, copy_path)

    def finish(s: Session) -> bool:
        row = _license_for(s, license_id)
        if not row.copy_path or not Path(row.copy_path).exists():
            row.steps_done = [st for st in row.steps_done if st != "embed"]  # next run embeds again
            return False
        _mark(row, "register")
        row.status, row.completed_at = LICENSE_COMPLETE, utcnow()
        return True

    if not reg.run(finish):
        raise ModelprintError(f"licence #{license_id}: the fingerprinted copy '{copy_path}' is missing; "
                              "re-run 'license issue' to embed it again")
    return reg.show("licenses", license_id)
