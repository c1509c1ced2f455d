"""ORM tables of the registry (SQLAlchemy 2, typed).

The schema itself is owned by the Alembic migrations in ``migrations/``; these
classes must match the head revision (a test compares them).
"""
from __future__ import annotations

import datetime as _dt
from typing import Any, Optional

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

LICENSE_PENDING = "pending"
LICENSE_COMPLETE = "complete"


def utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Owner(Base):
    """Who holds the secrets (and the Fernet key) of the sets filed under them."""

    __tablename__ = "owners"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[_dt.datetime] = mapped_column(DateTime, default=utcnow)


class BaseModel(Base):
    """A model we fingerprint; ``content_hash`` is the weights hash the sets were generated from."""

    __tablename__ = "base_models"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    source: Mapped[str] = mapped_column(Text, default="")
    content_hash: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[_dt.datetime] = mapped_column(DateTime, default=utcnow)


class FingerprintSetRow(Base):
    """A fingerprint set: public header columns plus the whole set file encrypted (Fernet)."""

    __tablename__ = "fingerprint_sets"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("owners.id"))
    base_model_id: Mapped[Optional[int]] = mapped_column(ForeignKey("base_models.id"), nullable=True)
    strategy: Mapped[str] = mapped_column(String(100))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    model_hash: Mapped[str] = mapped_column(String(200))
    tokenizer_hash: Mapped[str] = mapped_column(String(200))
    count: Mapped[int] = mapped_column(Integer)
    key_indices: Mapped[list[int]] = mapped_column(JSON, default=list)  # public: which indices exist
    set_id: Mapped[str] = mapped_column(String(100), unique=True)
    key_id: Mapped[str] = mapped_column(String(64))
    secrets: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[_dt.datetime] = mapped_column(DateTime, default=utcnow)

    owner: Mapped[Owner] = relationship()
    base_model: Mapped[Optional[BaseModel]] = relationship()


class Licensee(Base):
    __tablename__ = "licensees"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    contact: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[_dt.datetime] = mapped_column(DateTime, default=utcnow)


class License(Base):
    """One licensee's fingerprinted copy of a base model; ``complete`` only after the last step."""

    __tablename__ = "licenses"
    __table_args__ = (UniqueConstraint("licensee_id", "base_model_id", name="uq_license_licensee_model"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    licensee_id: Mapped[int] = mapped_column(ForeignKey("licensees.id"))
    base_model_id: Mapped[int] = mapped_column(ForeignKey("base_models.id"))
    fingerprint_set_id: Mapped[Optional[int]] = mapped_column(ForeignKey("fingerprint_sets.id"), nullable=True)
    copy_hash: Mapped[Optional[str]] = mapped_column(String(200), nullable=True)
    copy_path: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(20), default=LICENSE_PENDING)
    steps_done: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[_dt.datetime] = mapped_column(DateTime, default=utcnow)
    completed_at: Mapped[Optional[_dt.datetime]] = mapped_column(DateTime, nullable=True)

    licensee: Mapped[Licensee] = relationship()
    base_model: Mapped[BaseModel] = relationship()
    fingerprint_set: Mapped[Optional[FingerprintSetRow]] = relationship()


class VerificationRun(Base):
    __tablename__ = "verification_runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    fingerprint_set_id: Mapped[int] = mapped_column(ForeignKey("fingerprint_sets.id"))
    target: Mapped[str] = mapped_column(Text)
    backend: Mapped[str] = mapped_column(String(100))
    keys: Mapped[list[int]] = mapped_column(JSON, default=list)
    n_asked: Mapped[int] = mapped_column(Integer)
    matches: Mapped[int] = mapped_column(Integer)
    p_value: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    verdict: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[_dt.datetime] = mapped_column(DateTime, default=utcnow)

    fingerprint_set: Mapped[FingerprintSetRow] = relationship()


class KeySpend(Base):
    """One key of a set asked once; later verifications prefer keys with no rows here."""

    __tablename__ = "key_spends"
    id: Mapped[int] = mapped_column(primary_key=True)
    fingerprint_set_id: Mapped[int] = mapped_column(ForeignKey("fingerprint_sets.id"), index=True)
    key_index: Mapped[int] = mapped_column(Integer)
    verification_id: Mapped[Optional[int]] = mapped_column(ForeignKey("verification_runs.id"), nullable=True)
    created_at: Mapped[_dt.datetime] = mapped_column(DateTime, default=utcnow)


class StressRun(Base):
    __tablename__ = "stress_runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    model: Mapped[str] = mapped_column(Text)
    suite: Mapped[str] = mapped_column(String(200))
    report_path: Mapped[str] = mapped_column(Text, default="")
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[_dt.datetime] = mapped_column(DateTime, default=utcnow)


KINDS: dict[str, type[Base]] = {
    "owners": Owner, "models": BaseModel, "sets": FingerprintSetRow, "licensees": Licensee,
    "licenses": License, "verifications": VerificationRun, "stress": StressRun,
}
