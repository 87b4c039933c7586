"""Fencing: each claim of a job gets a token that its outcome must name.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add email_jobs.claim_token."""
    with op.batch_alter_table("email_jobs") as batch:
        batch.add_column(sa.Column("claim_token", sa.Uuid(), nullable=True))


def downgrade() -> None:
    """Remove email_jobs.claim_token."""
    with op.batch_alter_table("email_jobs") as batch:
        batch.drop_column("claim_token")
