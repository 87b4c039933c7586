"""Bulk sends: one template to many recipients; per-recipient results of a job.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

JSON_DOCUMENT = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    """Create email_bulks and email_bulk_recipients; add email_jobs.recipient_results."""
    op.create_table(
        "email_bulks",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("template_id", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(50), nullable=False),
        sa.Column("payload", JSON_DOCUMENT, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("provider", sa.String(50)),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("cancelled_at", sa.DateTime()),
        sa.PrimaryKeyConstraint("id", name="email_bulks_pkey"),
    )
    op.create_table(
        "email_bulk_recipients",
        sa.Column("bulk_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("address", sa.String(255), nullable=False),
        sa.Column("data", JSON_DOCUMENT, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("provider", sa.String(50)),
        sa.Column("provider_message_id", sa.String(255)),
        sa.Column("error", sa.Text()),
        sa.Column("lease_expires_at", sa.DateTime()),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("bulk_id", "position", name="email_bulk_recipients_pkey"),
        sa.ForeignKeyConstraint(
            ["bulk_id"],
            ["email_bulks.id"],
            name="email_bulk_recipients_bulk_id_fkey",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "idx_email_bulk_recipients_bulk_id_status",
        "email_bulk_recipients",
        ["bulk_id", "status"],
    )
    with op.batch_alter_table("email_jobs") as batch:
        batch.add_column(sa.Column("recipient_results", JSON_DOCUMENT, nullable=True))


def downgrade() -> None:
    """Remove the bulk tables and email_jobs.recipient_results."""
    with op.batch_alter_table("email_jobs") as batch:
        batch.drop_column("recipient_results")
    op.drop_index("idx_email_bulk_recipients_bulk_id_status", "email_bulk_recipients")
    op.drop_table("email_bulk_recipients")
    op.drop_table("email_bulks")
