"""Sync-owned tables: ledger, customer links, runs, tokens and claims.

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

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sync_ledger",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("integration_id", sa.Integer, nullable=False),
        sa.Column("invoice_id", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("run_id", sa.String(250)),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("external_id", sa.String(64)),
        sa.Column("registration_number", sa.String(64)),
        sa.Column("error_class", sa.String(16)),
        sa.Column("error_message", sa.Text),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint("integration_id", "invoice_id", name="uq_sync_ledger_invoice"),
    )
    op.create_index("ix_sync_ledger_state", "sync_ledger", ["integration_id", "state"])
    op.create_index("ix_sync_ledger_run", "sync_ledger", ["run_id"])
    op.create_table(
        "sync_customer_links",
        sa.Column("integration_id", sa.Integer, primary_key=True),
        sa.Column("customer_id", sa.Integer, primary_key=True),
        sa.Column("external_id", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(250)),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "sync_runs",
        sa.Column("dag_id", sa.String(250), primary_key=True),
        sa.Column("run_id", sa.String(250), primary_key=True),
        sa.Column("run_type", sa.String(32), nullable=False),
        sa.Column("triggered_by", sa.String(255)),
        sa.Column("counts", sa.JSON, nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS),
    )
    op.create_table(
        "sync_tokens",
        sa.Column("conn_id", sa.String(250), primary_key=True),
        sa.Column("access_token", sa.Text),
        sa.Column("refresh_token", sa.Text),
        sa.Column("expires_at", TS),
        sa.Column("lock_version", sa.Integer, nullable=False, server_default="0"),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "sync_claims",
        sa.Column("integration_id", sa.Integer, primary_key=True),
        sa.Column("holder", sa.String(500), nullable=False),
        sa.Column("fencing_token", sa.Integer, nullable=False),
        sa.Column("lease_expires_at", TS, nullable=False),
        sa.Column("acquired_at", TS, nullable=False),
    )


def downgrade() -> None:
    for table in ("sync_claims", "sync_tokens", "sync_runs", "sync_customer_links", "sync_ledger"):
        op.drop_table(table)
