"""Alembic environment: runs on the connection modelprint hands over (never reads a URL itself)."""
from __future__ import annotations

from alembic import context

from modelprint.registry.schema import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only via the alembic command line
    from modelprint.registry.db import make_engine, resolve_url

    connection = make_engine(resolve_url()).connect()

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                  transaction_per_migration=False)
with context.begin_transaction():
    context.run_migrations()
