"""The console's accounts: ``console_users``.

A user has a unique name, a role (viewer, support or admin), an Argon2 password hash
(NULL for a user who signs in only through the trusted proxy), when they last signed
in, and when they were disabled. Downgrading drops the table.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create console_users."""
    op.create_table(
        "console_users",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("last_sign_in_at", sa.DateTime(), nullable=True),
        sa.Column("disabled_at", sa.DateTime(), nullable=True),
    )


def downgrade() -> None:
    """Drop console_users."""
    op.drop_table("console_users")
