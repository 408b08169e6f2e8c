"""Alembic environment: runs on the engine handed over by :mod:`invoice_sync.store.migrate`."""

from __future__ import annotations

from alembic import context

from invoice_sync.store.migrate import VERSION_TABLE
from invoice_sync.store.models import SyncBase

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=SyncBase.metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
