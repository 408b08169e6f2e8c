"""Shared rate windows: one row per vendor scope that several tasks spend together.

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
        "sync_rate_windows",
        sa.Column("key", sa.String(250), primary_key=True),
        sa.Column("start", sa.Double),
        sa.Column("used", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sync_rate_windows")
