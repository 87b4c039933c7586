"""API keys get kinds, senders, an expiry, a rate limit and a test flag; an audit log.

``api_keys`` gains ``kinds`` and ``senders`` (space-separated; NULL: any), ``expires_at``,
``rate_limit`` (``10/s``, ``600/min``; NULL: none) and ``test`` (false for every key made
before). ``audit_log`` records who (an API key's prefix and id, or ``cli``) did what to
what, and when. Downgrading drops them.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the key columns and create audit_log."""
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("kinds", sa.Text(), nullable=True))
        batch.add_column(sa.Column("senders", sa.Text(), nullable=True))
        batch.add_column(sa.Column("expires_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("rate_limit", sa.String(20), nullable=True))
        batch.add_column(sa.Column("test", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("occurred_at", sa.DateTime(), nullable=False),
        sa.Column("actor", sa.String(50), nullable=False),
        sa.Column("actor_key_id", sa.Uuid(), nullable=True),
        sa.Column("action", sa.String(50), nullable=False),
        sa.Column("target", sa.String(255), nullable=True),
    )
    op.create_index("idx_audit_log_occurred_at", "audit_log", ["occurred_at"])


def downgrade() -> None:
    """Drop audit_log and the key columns."""
    op.drop_index("idx_audit_log_occurred_at", "audit_log")
    op.drop_table("audit_log")
    with op.batch_alter_table("api_keys") as batch:
        for name in ("test", "rate_limit", "expires_at", "senders", "kinds"):
            batch.drop_column(name)
