"""Per-key spend tracking (so verifications prefer unspent keys) and stress-test runs.

Revision ID: 0002
Revises: 0001
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "key_spends",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("fingerprint_set_id", sa.Integer, sa.ForeignKey("fingerprint_sets.id"), nullable=False),
        sa.Column("key_index", sa.Integer, nullable=False),
        sa.Column("verification_id", sa.Integer, sa.ForeignKey("verification_runs.id"), nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_key_spends_fingerprint_set_id", "key_spends", ["fingerprint_set_id"])
    op.create_table(
        "stress_runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("suite", sa.String(200), nullable=False),
        sa.Column("report_path", sa.Text, nullable=False),
        sa.Column("summary", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("stress_runs")
    op.drop_index("ix_key_spends_fingerprint_set_id", table_name="key_spends")
    op.drop_table("key_spends")
