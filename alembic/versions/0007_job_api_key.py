"""Each job sent over HTTP records its API key: a key reads only the jobs it created.

Jobs that an earlier request with an Idempotency-Key made are given to that request's
key. Other jobs sent over HTTP before this revision cannot be told apart from a
producer's and belong to no key: the API no longer shows them (the CLI still does).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add email_jobs.api_key_id, filled from api_requests where one key made the job."""
    with op.batch_alter_table("email_jobs") as batch:
        batch.add_column(sa.Column("api_key_id", sa.Uuid(), nullable=True))
        batch.create_foreign_key("email_jobs_api_key_id_fkey", "api_keys", ["api_key_id"], ["id"])
    # A job two keys' requests point at (one body's idempotency_key) stays nobody's.
    op.execute(
        "UPDATE email_jobs SET api_key_id = (SELECT api_key_id FROM api_requests"
        " WHERE api_requests.job_id = email_jobs.id LIMIT 1)"
        " WHERE id IN (SELECT job_id FROM api_requests GROUP BY job_id"
        " HAVING count(DISTINCT api_key_id) = 1)"
    )


def downgrade() -> None:
    """Remove email_jobs.api_key_id."""
    with op.batch_alter_table("email_jobs") as batch:
        batch.drop_constraint("email_jobs_api_key_id_fkey", type_="foreignkey")
        batch.drop_column("api_key_id")
