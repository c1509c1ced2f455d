"""The registry's operations: every change is one transaction, retried on lock contention.

``Registry(url)`` opens (and migrates up to head) the database named by
:func:`modelprint.registry.db.resolve_url`. Keys and responses only enter or leave
through the Fernet key (see :mod:`modelprint.registry.secrets`) and are never logged.
"""
from __future__ import annotations

import datetime as _dt
import getpass
import logging
import os
import random
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar, Union

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from modelprint.errors import ModelprintError
from modelprint.fingerprints import SECRET_FILE_MODE, FingerprintSet
from modelprint.io import check_output_file, write_text_atomic
from modelprint.registry import db, secrets
from modelprint.registry.schema import (KINDS, BaseModel, FingerprintSetRow, KeySpend, License, Licensee, Owner,
                                        StressRun, VerificationRun)
from modelprint.registry.settext import parse_fingerprints_text

log = logging.getLogger(__name__)
T = TypeVar("T")
SetRef = Union[str, int, FingerprintSet]  # name, row id, "sha256:…" set_id, or the set itself (by set_id)


def default_owner() -> str:
    """``$MODELPRINT_OWNER`` or the login name."""
    env = os.environ.get("MODELPRINT_OWNER")
    if env:
        return env
    try:
        return getpass.getuser()
    except Exception:
        return "owner"


def _iso(value: Any) -> Any:
    return value.isoformat() + "Z" if isinstance(value, _dt.datetime) else value


def _check_name(name: str, what: str) -> str:
    name = (name or "").strip()
    if not name:
        raise ModelprintError(f"{what} name must not be empty")
    if len(name) > 200:
        raise ModelprintError(f"{what} name is longer than 200 characters")
    return name


class Registry:
    """One registry database. Opening it checks the schema revision and upgrades an older one."""

    def __init__(self, url: Optional[str] = None, *, migrate: bool = True) -> None:
        self.url = db.resolve_url(url)
        self.engine = db.make_engine(self.url)
        rev = db.current_revision(self.engine, self.url)
        if migrate and rev != db.head_revision():
            log.info("upgrading registry schema %s -> %s", rev or "<empty>", db.head_revision())
            db.upgrade(self.engine, self.url)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions ---------------------------------------------------------------
    def run(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn`` in one transaction (committed on success); lock contention is retried."""
        def attempt() -> T:
            with Session(self.engine, expire_on_commit=False) as session, session.begin():
                return fn(session)

        try:
            return db.with_retry(attempt)
        except IntegrityError as exc:
            raise ModelprintError(f"registry rejected the change: {db._first_line(exc)}") from None
        except DBAPIError as exc:
            raise db.connect_error(self.url, exc) from None

    # -- lookups ----------------------------------------------------------------------
    @staticmethod
    def _by_name(session: Session, model: type, ref: SetRef, what: str) -> Any:
        ref_s = ref.set_id if isinstance(ref, FingerprintSet) else str(ref).strip()
        row = session.scalar(select(model).where(model.name == ref_s)) if hasattr(model, "name") else None
        if row is None and ref_s.isdigit():
            row = session.get(model, int(ref_s))
        if row is None and model is FingerprintSetRow and ref_s.startswith("sha256:"):
            row = session.scalar(select(model).where(model.set_id == ref_s))
        if row is None and model is License:  # a licensee's only licence, by licensee name
            rows = session.scalars(select(License).join(Licensee).where(Licensee.name == ref_s)).all()
            if len(rows) > 1:
                raise ModelprintError(f"licensee '{ref_s}' holds {len(rows)} licences; give the licence id")
            row = rows[0] if rows else None
        if row is None:
            raise ModelprintError(f"unknown {what} '{ref_s}' (see 'modelprint registry list')")
        return row

    def _owner(self, session: Session, name: Optional[str]) -> Owner:
        name = _check_name(name or default_owner(), "owner")
        row = session.scalar(select(Owner).where(Owner.name == name))
        if row is None:
            row = Owner(name=name)
            session.add(row)
            session.flush()
        return row

    # -- owners, models, licensees -------------------------------------------------
    def add_owner(self, name: str) -> int:
        return self.run(lambda s: self._owner(s, name).id)

    def add_model(self, name: str, source: str = "", content_hash: str = "") -> int:
        """Register a base model; the name must be new."""
        name = _check_name(name, "model")

        def do(s: Session) -> int:
            if s.scalar(select(BaseModel.id).where(BaseModel.name == name)) is not None:
                raise ModelprintError(f"model '{name}' is already registered")
            row = BaseModel(name=name, source=source or name, content_hash=content_hash)
            s.add(row)
            s.flush()
            return row.id

        return self.run(do)

    def add_licensee(self, name: str, contact: str = "") -> int:
        """Register a licensee; duplicate names are refused."""
        name = _check_name(name, "licensee")

        def do(s: Session) -> int:
            if s.scalar(select(Licensee.id).where(Licensee.name == name)) is not None:
                raise ModelprintError(f"licensee '{name}' already exists")
            row = Licensee(name=name, contact=contact)
            s.add(row)
            s.flush()
            return row.id

        return self.run(do)

    # -- fingerprint sets -------------------------------------------------------------
    def insert_set(self, s: Session, fs: FingerprintSet, name: str, owner: Optional[str], key: bytes) -> FingerprintSetRow:
        name = _check_name(name, "fingerprint set")
        if s.scalar(select(FingerprintSetRow.id).where(FingerprintSetRow.name == name)) is not None:
            raise ModelprintError(f"fingerprint set '{name}' already exists")
        existing = s.scalar(select(FingerprintSetRow.name).where(FingerprintSetRow.set_id == fs.set_id))
        if existing is not None:
            raise ModelprintError(f"this fingerprint set is already registered as '{existing}'")
        model = s.scalar(select(BaseModel).where(BaseModel.content_hash == fs.model_hash, BaseModel.content_hash != ""))
        row = FingerprintSetRow(
            name=name, owner=self._owner(s, owner), base_model=model, strategy=fs.strategy, params=fs.params,
            model_hash=fs.model_hash, tokenizer_hash=fs.tokenizer_hash, count=len(fs),
            key_indices=[fp.index for fp in fs], set_id=fs.set_id, key_id=secrets.key_id(key),
            secrets=secrets.encrypt(key, fs.to_text()))
        s.add(row)
        s.flush()
        return row

    def add_set(self, fs: FingerprintSet, name: str, owner: Optional[str] = None, key: Optional[bytes] = None) -> int:
        """Store ``fs`` encrypted under the owner's key; returns its row id."""
        key = key or secrets.load_key()
        return self.run(lambda s: self.insert_set(s, fs, name, owner, key).id)

    def import_set_file(self, path: Path, name: str, owner: Optional[str] = None) -> int:
        from modelprint.fingerprints import load_fingerprints

        return self.add_set(load_fingerprints(Path(path)), name, owner)

    def _decrypt(self, row: FingerprintSetRow, key: Optional[bytes]) -> FingerprintSet:
        key = key or secrets.load_key()
        text = secrets.decrypt(key, row.secrets, row.key_id, f"fingerprint set '{row.name}'")
        fs = parse_fingerprints_text(text, f"registry set '{row.name}'")
        if fs.set_id != row.set_id:  # the stored copy must be the set the record (and any model card) names
            raise ModelprintError(f"registry set '{row.name}' does not hash to its recorded set_id")
        return fs

    def resolve_set(self, ref: SetRef, key: Optional[bytes] = None) -> FingerprintSet:
        """The decrypted set named ``ref`` (name, id or set_id)."""
        row = self.run(lambda s: self._by_name(s, FingerprintSetRow, ref, "fingerprint set"))
        return self._decrypt(row, key)

    def export_set(self, ref: SetRef, out: Path, overwrite: bool = False, key: Optional[bytes] = None) -> Path:
        """Write the set as a normal fingerprint file (owner-only, atomic)."""
        out = Path(out)
        check_output_file(out, overwrite)
        fs = self.resolve_set(ref, key)
        write_text_atomic(out, fs.to_text(), mode=SECRET_FILE_MODE)
        return out

    # -- key spending and verification runs -----------------------------------------
    def choose_keys(self, ref: SetRef, n: int, seed: int = 0) -> list[int]:
        """``n`` key indices of the set, least-spent first (unspent before any spent), shuffled by ``seed``."""
        def do(s: Session) -> tuple[list[int], dict[int, int]]:
            row = self._by_name(s, FingerprintSetRow, ref, "fingerprint set")
            counts = dict(s.execute(select(KeySpend.key_index, func.count()).where(
                KeySpend.fingerprint_set_id == row.id).group_by(KeySpend.key_index)).all())
            return list(row.key_indices), counts

        indices, counts = self.run(do)
        if n < 1 or n > len(indices):
            raise ModelprintError(f"cannot choose {n} keys from a set of {len(indices)}")
        rng = random.Random(seed)
        shuffled = sorted(indices)
        rng.shuffle(shuffled)
        shuffled.sort(key=lambda i: counts.get(i, 0))  # stable: keeps the shuffle within each spend count
        return shuffled[:n]

    def spent_keys(self, ref: SetRef) -> dict[int, int]:
        """How often each key index of the set has been asked."""
        def do(s: Session) -> dict[int, int]:
            row = self._by_name(s, FingerprintSetRow, ref, "fingerprint set")
            return dict(s.execute(select(KeySpend.key_index, func.count()).where(
                KeySpend.fingerprint_set_id == row.id).group_by(KeySpend.key_index)).all())

        return self.run(do)

    def record_verification(self, ref: SetRef, *, target: str, backend: str, keys: list[int], matches: int,
                            verdict: str, p_value: Optional[float] = None, n_asked: Optional[int] = None) -> int:
        """Record a verification run and mark its keys spent, in one transaction; returns the run id."""
        keys = [int(k) for k in keys]
        n_asked = len(keys) if n_asked is None else int(n_asked)
        if matches < 0 or matches > max(n_asked, 0):
            raise ModelprintError(f"matches ({matches}) must be between 0 and the number asked ({n_asked})")

        def do(s: Session) -> int:
            row = self._by_name(s, FingerprintSetRow, ref, "fingerprint set")
            unknown = sorted(set(keys) - set(row.key_indices))
            if unknown:
                raise ModelprintError(f"key index {unknown[0]} is not in fingerprint set '{row.name}'")
            run = VerificationRun(fingerprint_set_id=row.id, target=str(target), backend=str(backend), keys=keys,
                                  n_asked=n_asked, matches=int(matches), p_value=p_value, verdict=str(verdict))
            s.add(run)
            s.flush()
            s.add_all([KeySpend(fingerprint_set_id=row.id, key_index=k, verification_id=run.id) for k in keys])
            return run.id

        return self.run(do)

    def count_verifications(self, ref: SetRef, target: str) -> int:
        """How many verifications of the set against ``target`` the ledger holds (each is one more test)."""
        def do(s: Session) -> int:
            row = self._by_name(s, FingerprintSetRow, ref, "fingerprint set")
            return int(s.execute(select(func.count()).select_from(VerificationRun).where(
                VerificationRun.fingerprint_set_id == row.id, VerificationRun.target == str(target))).scalar_one())

        return self.run(do)

    def record_stress(self, *, model: str, suite: str, report_path: str = "", summary: Optional[dict] = None) -> int:
        def do(s: Session) -> int:
            row = StressRun(model=str(model), suite=str(suite), report_path=str(report_path), summary=summary or {})
            s.add(row)
            s.flush()
            return row.id

        return self.run(do)

    # -- listing and showing -------------------------------------------------------------
    @staticmethod
    def _public(row: Any) -> dict[str, Any]:
        """A row's columns minus the encrypted blob; relations by name."""
        out: dict[str, Any] = {}
        for col in row.__table__.columns:
            if col.key == "secrets":
                out["secrets"] = "<encrypted>"
                continue
            out[col.key] = _iso(getattr(row, col.key))
        for rel, label in (("owner", "owner"), ("base_model", "model"), ("licensee", "licensee"),
                           ("fingerprint_set", "set")):
            if hasattr(row, rel):
                target = getattr(row, rel)
                out[label] = target.name if target is not None else None
        return out

    def list(self, kind: str) -> list[dict[str, Any]]:
        model = self._kind(kind)
        return self.run(lambda s: [self._public(r) for r in s.scalars(select(model).order_by(model.id))])

    def show(self, kind: str, ref: SetRef, reveal: bool = False, key: Optional[bytes] = None) -> dict[str, Any]:
        """One record; for sets, ``reveal`` decrypts keys and responses (needs the key)."""
        model = self._kind(kind)
        what = {"stress": "stress run", "verifications": "verification run", "models": "model"}.get(kind, kind[:-1])

        def do(s: Session) -> tuple[Any, dict[str, Any]]:
            row = self._by_name(s, model, ref, what)
            return row, self._public(row)

        row, out = self.run(do)
        if kind == "sets":
            out["spent_keys"] = len(self.spent_keys(row.id))
            if reveal:
                fs = self._decrypt(row, key)
                out["fingerprints"] = [{"index": fp.index, "key": fp.key, "response": fp.response} for fp in fs]
        elif reveal:
            raise ModelprintError("--reveal only applies to fingerprint sets")
        return out

    @staticmethod
    def _kind(kind: str) -> type:
        if kind not in KINDS:
            raise ModelprintError(f"unknown registry kind '{kind}' (choose from {', '.join(KINDS)})")
        return KINDS[kind]


def open_registry(url: Optional[str] = None) -> Registry:
    return Registry(url)


def resolve_set(name: SetRef, url: Optional[str] = None) -> FingerprintSet:
    """The decrypted fingerprint set registered as ``name`` (for verify/trace)."""
    with Registry(url) as reg:
        return reg.resolve_set(name)


def choose_keys(set_ref: SetRef, n: int, seed: int = 0, url: Optional[str] = None) -> list[int]:
    """``n`` key indices of the set, unspent ones first."""
    with Registry(url) as reg:
        return reg.choose_keys(set_ref, n, seed)


def record_verification(set_ref: SetRef, *, target: str, backend: str, keys: list[int], matches: int, verdict: str,
                        p_value: Optional[float] = None, n_asked: Optional[int] = None,
                        url: Optional[str] = None) -> int:
    """Record a verification of ``target`` against the registered set; its keys become spent."""
    with Registry(url) as reg:
        return reg.record_verification(set_ref, target=target, backend=backend, keys=keys, matches=matches,
                                       verdict=verdict, p_value=p_value, n_asked=n_asked)


def count_verifications(set_ref: SetRef, target: str, url: Optional[str] = None) -> int:
    """How many verifications of ``target`` against the registered set are recorded."""
    with Registry(url) as reg:
        return reg.count_verifications(set_ref, target)


def record_stress(*, model: str, suite: str, report_path: str = "", summary: Optional[dict] = None,
                  url: Optional[str] = None) -> int:
    with Registry(url) as reg:
        return reg.record_stress(model=model, suite=suite, report_path=report_path, summary=summary)


def init_registry(url: Optional[str] = None, key_path: Optional[Path] = None) -> dict[str, Any]:
    """Create/upgrade the database to head and create the owner's key file unless a key is in the env."""
    reg = Registry(url, migrate=False)
    try:
        before = db.current_revision(reg.engine, reg.url)
        db.upgrade(reg.engine, reg.url)
    finally:
        reg.close()
    info: dict[str, Any] = {"database": db.safe_url(reg.url), "revision": db.head_revision(),
                            "upgraded_from": before}
    if os.environ.get(secrets.ENV_KEY):
        info["secret_key"] = f"${secrets.ENV_KEY}"
    else:
        path, created = secrets.create_key_file(key_path)
        info["secret_key"] = str(path)
        info["secret_key_created"] = created
    return info
