"""Delivery events, the suppression list, and API keys for the HTTP API.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
UNAPPLIED = sa.text("applied_at IS NULL")


def upgrade() -> None:
    """Create email_events, email_suppressions, api_keys and api_requests."""
    op.create_table(
        "email_events",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("job_id", sa.Uuid(), nullable=True),  # None until matched to a job
        sa.Column("provider", sa.String(20), nullable=False),
        sa.Column("provider_event_id", sa.String(255), nullable=False),
        sa.Column("provider_message_id", sa.String(255), nullable=True),
        sa.Column("event_type", sa.String(20), nullable=False),
        sa.Column("bounce_type", sa.String(10), nullable=True),  # hard | soft
        sa.Column("recipient", sa.String(255), nullable=True),
        sa.Column("occurred_at", sa.DateTime(), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("applied_at", sa.DateTime(), nullable=True),
        sa.Column("machine_open", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("payload", JSON, nullable=True),
        sa.UniqueConstraint("provider", "provider_event_id", name="uq_email_events_provider_id"),
    )
    op.create_index("idx_email_events_job_id", "email_events", ["job_id"])
    op.create_index("idx_email_events_message_id", "email_events", ["provider_message_id"])
    op.create_index(
        "idx_email_events_unapplied",
        "email_events",
        ["received_at"],
        postgresql_where=UNAPPLIED,
        sqlite_where=UNAPPLIED,
    )
    # Events without our id are matched by the provider's message id.
    op.create_index("idx_email_tracking_message_id", "email_tracking", ["message_id"])
    op.create_table(
        "email_suppressions",
        sa.Column("address", sa.String(255), primary_key=True),  # lower-cased
        sa.Column("reason", sa.String(20), nullable=False),
        sa.Column("scope", sa.String(20), nullable=False),  # all | marketing
        sa.Column("source", sa.String(50), nullable=True),
        sa.Column("job_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(128), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_used_at", sa.DateTime(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
    )
    op.create_table(
        "api_requests",
        sa.Column("api_key_id", sa.Uuid(), sa.ForeignKey("api_keys.id"), primary_key=True),
        sa.Column("idempotency_key", sa.String(255), primary_key=True),
        sa.Column("body_hash", sa.String(64), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    """Drop the tables of 0006."""
    op.drop_table("api_requests")
    op.drop_table("api_keys")
    op.drop_table("email_suppressions")
    op.drop_index("idx_email_tracking_message_id", "email_tracking")
    op.drop_index("idx_email_events_unapplied", "email_events")
    op.drop_index("idx_email_events_message_id", "email_events")
    op.drop_index("idx_email_events_job_id", "email_events")
    op.drop_table("email_events")
