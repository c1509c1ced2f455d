"""Licence records: the storage half of ``license issue`` (the flow itself is :mod:`modelprint.licensing`).

Each step's result is committed with the step's name in ``licenses.steps_done`` in one transaction, so a
run killed at any point resumes where it stopped, and the licence only becomes ``complete`` after the last
step. This module stores; it runs no stage.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelprint.errors import ModelprintError
from modelprint.fingerprints import FingerprintSet
from modelprint.registry.schema import LICENSE_COMPLETE, LICENSE_PENDING, BaseModel, License, Licensee, utcnow
from modelprint.registry.store import Registry

STEPS = ("generate", "embed", "register")


@dataclasses.dataclass(frozen=True)
class LicenseStart:
    """A pending licence as :func:`start_license` found or made it (no secrets)."""

    license_id: int
    steps_done: list[str]
    model_name: str
    model_source: str
    model_hash: str
    licensee: str


def set_name_for(license_id: int, licensee: str, model: str) -> str:
    return f"license-{license_id}-{licensee}-{model}"[:200]


def _license_for(s: Session, license_id: int) -> License:
    row = s.scalar(select(License).where(License.id == license_id).with_for_update())
    assert row is not None
    return row


def _mark(row: License, step: str) -> None:
    if step not in row.steps_done:
        row.steps_done = [*row.steps_done, step]  # new list: JSON columns track assignment, not mutation


def start_license(reg: Registry, licensee: str, model: str) -> LicenseStart:
    """The pending licence of ``licensee`` for ``model`` (made if missing); refuses a complete one."""

    def start(s: Session) -> LicenseStart:
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
        return LicenseStart(row.id, list(row.steps_done), base.name, base.source, base.content_hash, who.name)

    return reg.run(start)


def store_license_set(reg: Registry, start: LicenseStart, fs: FingerprintSet, owner: "str | None", key: bytes) -> None:
    """Store the licence's generated set (encrypted) and mark ``generate`` done; a concurrent run's set wins."""

    def save_set(s: Session) -> None:
        row = _license_for(s, start.license_id)
        if "generate" in row.steps_done:  # a concurrent run got there first; keep its set
            return
        set_row = reg.insert_set(s, fs, set_name_for(start.license_id, start.licensee, start.model_name), owner, key)
        row.fingerprint_set_id = set_row.id
        _mark(row, "generate")

    reg.run(save_set)


def license_set(reg: Registry, license_id: int, key: bytes) -> FingerprintSet:
    """The licence's stored fingerprint set, decrypted."""
    set_id = reg.run(lambda s: _license_for(s, license_id).fingerprint_set_id)
    return reg.resolve_set(int(set_id), key)


def store_license_copy(reg: Registry, license_id: int, copy_path: Path, copy_hash: str) -> None:
    """Record where the fingerprinted copy was written and its hash; mark ``embed`` done."""

    def save_copy(s: Session) -> None:
        row = _license_for(s, license_id)
        row.copy_path, row.copy_hash = str(copy_path), str(copy_hash)
        _mark(row, "embed")

    reg.run(save_copy)


def complete_license(reg: Registry, license_id: int) -> bool:
    """Mark the licence complete if its copy exists; else un-mark ``embed`` (the next run embeds again)."""

    def finish(s: Session) -> bool:
        row = _license_for(s, license_id)
        if not row.copy_path or not Path(row.copy_path).exists():
            row.steps_done = [st for st in row.steps_done if st != "embed"]  # next run embeds again
            return False
        _mark(row, "register")
        row.status, row.completed_at = LICENSE_COMPLETE, utcnow()
        return True

    return reg.run(finish)
