"""Job lifecycle: what claiming, retrying, scheduling and idempotency need.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

NEW_COLUMNS = (
    # The whole validated request, so a worker or beat can rebuild the send from the row.
    ("payload", sa.JSON().with_variant(JSONB(), "postgresql")),
    ("idempotency_key", sa.String(255)),
    ("last_error", sa.Text()),
    ("provider", sa.String(50)),
    ("provider_message_id", sa.String(255)),
    ("lease_expires_at", sa.DateTime()),
    ("sent_at", sa.DateTime()),
)


def upgrade() -> None:
    """Add the lifecycle columns and indexes to email_jobs."""
    with op.batch_alter_table("email_jobs") as batch:
        for name, type_ in NEW_COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))
        batch.create_index("idx_email_jobs_idempotency_key", ["idempotency_key"], unique=True)
        batch.create_index("idx_email_jobs_recipient_email", ["recipient_email"])
        batch.create_index("idx_email_jobs_status_scheduled_at", ["status", "scheduled_at"])


def downgrade() -> None:
    """Remove the lifecycle columns and indexes again."""
    with op.batch_alter_table("email_jobs") as batch:
        batch.drop_index("idx_email_jobs_status_scheduled_at")
        batch.drop_index("idx_email_jobs_recipient_email")
        batch.drop_index("idx_email_jobs_idempotency_key")
        for name, _ in reversed(NEW_COLUMNS):
            batch.drop_column(name)
