"""Indexes for the send path: only the rows beat looks for are indexed by status.

Every status change rewrites a job's index entries (status is indexed, so PostgreSQL
cannot update the row in place). The original service's single-column indexes on
status and scheduled_at are replaced by two partial ones: the jobs waiting to be sent,
by status and due time (beat's dispatcher and relay), and the jobs being sent, by
lease expiry (beat's reaper). A claim then writes one entry fewer, and recording a
sent email none of these, which on a busy worker is a third of the database's work.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

WAITING = sa.text("status IN ('pending', 'scheduled', 'retrying')")
SENDING = sa.text("status = 'sending'")


def upgrade() -> None:
    """Replace the status and due-time indexes with partial ones."""
    op.drop_index("idx_email_jobs_status_scheduled_at", "email_jobs")
    op.drop_index("idx_email_jobs_status", "email_jobs")
    op.drop_index("idx_email_jobs_scheduled_at", "email_jobs")
    op.create_index(
        "idx_email_jobs_waiting",
        "email_jobs",
        ["status", "scheduled_at"],
        postgresql_where=WAITING,
        sqlite_where=WAITING,
    )
    op.create_index(
        "idx_email_jobs_sending_lease",
        "email_jobs",
        ["lease_expires_at"],
        postgresql_where=SENDING,
        sqlite_where=SENDING,
    )


def downgrade() -> None:
    """Bring back the full indexes of 0001 and 0002."""
    op.drop_index("idx_email_jobs_sending_lease", "email_jobs")
    op.drop_index("idx_email_jobs_waiting", "email_jobs")
    op.create_index("idx_email_jobs_status", "email_jobs", ["status"])
    op.create_index("idx_email_jobs_scheduled_at", "email_jobs", ["scheduled_at"])
    op.create_index("idx_email_jobs_status_scheduled_at", "email_jobs", ["status", "scheduled_at"])
