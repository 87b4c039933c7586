"""Initial schema: the original service's three tables, exactly.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSON_DOCUMENT = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    """Create email_jobs, email_templates and email_tracking with their indexes."""
    postgres = op.get_bind().dialect.name == "postgresql"
    # SQLite has neither function; the service generates ids and timestamps itself.
    new_uuid = sa.text("gen_random_uuid()") if postgres else None
    now = sa.text("NOW()") if postgres else None

    op.create_table(
        "email_jobs",
        sa.Column("id", sa.Uuid(), server_default=new_uuid, nullable=False),
        sa.Column("job_type", sa.String(50), nullable=False),
        sa.Column("recipient_email", sa.String(255), nullable=False),
        sa.Column("subject", sa.String(500)),
        sa.Column("template_id", sa.String(100)),
        sa.Column("template_data", JSON_DOCUMENT),
        sa.Column("status", sa.String(20), server_default="pending"),
        sa.Column("priority", sa.Integer(), server_default=sa.text("0")),
        sa.Column("retry_count", sa.Integer(), server_default=sa.text("0")),
        sa.Column("max_retries", sa.Integer(), server_default=sa.text("3")),
        sa.Column("scheduled_at", sa.DateTime()),
        sa.Column("created_at", sa.DateTime(), server_default=now),
        sa.Column("updated_at", sa.DateTime(), server_default=now),
        sa.PrimaryKeyConstraint("id", name="email_jobs_pkey"),
    )
    op.create_index("idx_email_jobs_status", "email_jobs", ["status"])
    op.create_index("idx_email_jobs_scheduled_at", "email_jobs", ["scheduled_at"])
    op.create_index("idx_email_jobs_created_at", "email_jobs", ["created_at"])

    op.create_table(
        "email_templates",
        sa.Column("id", sa.String(100), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("subject", sa.String(500)),
        sa.Column("html_template", sa.Text()),
        sa.Column("text_template", sa.Text()),
        sa.Column("variables", JSON_DOCUMENT),
        sa.Column("is_active", sa.Boolean(), server_default=sa.true()),
        sa.Column("created_at", sa.DateTime(), server_default=now),
        sa.Column("updated_at", sa.DateTime(), server_default=now),
        sa.PrimaryKeyConstraint("id", name="email_templates_pkey"),
    )

    op.create_table(
        "email_tracking",
        sa.Column("id", sa.Uuid(), server_default=new_uuid, nullable=False),
        sa.Column("job_id", sa.Uuid()),
        sa.Column("provider", sa.String(50)),
        sa.Column("message_id", sa.String(255)),
        sa.Column("status", sa.String(50)),
        sa.Column("sent_at", sa.DateTime()),
        sa.Column("delivered_at", sa.DateTime()),
        sa.Column("opened_at", sa.DateTime()),
        sa.Column("clicked_at", sa.DateTime()),
        sa.Column("error_message", sa.Text()),
        sa.Column("created_at", sa.DateTime(), server_default=now),
        sa.PrimaryKeyConstraint("id", name="email_tracking_pkey"),
        sa.ForeignKeyConstraint(["job_id"], ["email_jobs.id"], name="email_tracking_job_id_fkey"),
    )
    op.create_index("idx_email_tracking_job_id", "email_tracking", ["job_id"])
    op.create_index("idx_email_tracking_status", "email_tracking", ["status"])


def downgrade() -> None:
    """Drop the three tables."""
    op.drop_table("email_tracking")
    op.drop_table("email_templates")
    op.drop_table("email_jobs")
