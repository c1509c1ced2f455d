"""Initial registry: owners, base models, fingerprint sets, licensees, licences, verification runs.

Revision ID: 0001
Revises:
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "owners",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "base_models",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("content_hash", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "fingerprint_sets",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("owner_id", sa.Integer, sa.ForeignKey("owners.id"), nullable=False),
        sa.Column("base_model_id", sa.Integer, sa.ForeignKey("base_models.id"), nullable=True),
        sa.Column("strategy", sa.String(100), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("model_hash", sa.String(200), nullable=False),
        sa.Column("tokenizer_hash", sa.String(200), nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("key_indices", sa.JSON, nullable=False),
        sa.Column("set_id", sa.String(100), nullable=False, unique=True),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("secrets", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "licensees",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("contact", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "licenses",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("licensee_id", sa.Integer, sa.ForeignKey("licensees.id"), nullable=False),
        sa.Column("base_model_id", sa.Integer, sa.ForeignKey("base_models.id"), nullable=False),
        sa.Column("fingerprint_set_id", sa.Integer, sa.ForeignKey("fingerprint_sets.id"), nullable=True),
        sa.Column("copy_hash", sa.String(200), nullable=True),
        sa.Column("copy_path", sa.Text, nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("steps_done", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("completed_at", sa.DateTime, nullable=True),
        sa.UniqueConstraint("licensee_id", "base_model_id", name="uq_license_licensee_model"),
    )
    op.create_table(
        "verification_runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("fingerprint_set_id", sa.Integer, sa.ForeignKey("fingerprint_sets.id"), nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("backend", sa.String(100), nullable=False),
        sa.Column("keys", sa.JSON, nullable=False),
        sa.Column("n_asked", sa.Integer, nullable=False),
        sa.Column("matches", sa.Integer, nullable=False),
        sa.Column("p_value", sa.Float, nullable=True),
        sa.Column("verdict", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    for table in ("verification_runs", "licenses", "licensees", "fingerprint_sets", "base_models", "owners"):
        op.drop_table(table)
