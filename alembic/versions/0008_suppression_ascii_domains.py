"""Suppressed addresses with an international domain are kept in its ASCII form.

Sends are checked against the list in one form (lower case, the domain in IDNA ASCII:
``bob@xn--mller-kva.com``), whatever form an entry was given in. Rows stored with a
Unicode domain are rewritten to that form; when the list already holds it, the two
rows become one, keeping the wider scope. Downgrading keeps the ASCII form, which is
the one envelopes carry and earlier code compared with.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from email_validator import EmailNotValidError, validate_email

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

SUPPRESSIONS = sa.table(
    "email_suppressions",
    sa.column("address", sa.String),
    sa.column("reason", sa.String),
    sa.column("scope", sa.String),
    sa.column("source", sa.String),
    sa.column("job_id", sa.Uuid),
)


def upgrade() -> None:
    """Rewrite the addresses that have non-ASCII characters, merging duplicates."""
    connection = op.get_bind()
    octets = sa.func.octet_length if connection.dialect.name == "postgresql" else _sqlite_octets
    address = SUPPRESSIONS.c.address
    rows = connection.execute(
        sa.select(SUPPRESSIONS).where(octets(address) != sa.func.length(address))
    ).all()
    for row in rows:
        new = _ascii_form(row.address)
        if new == row.address:
            continue
        held = connection.execute(sa.select(SUPPRESSIONS).where(address == new)).one_or_none()
        if held is None:
            connection.execute(
                sa.update(SUPPRESSIONS).where(address == row.address).values(address=new)
            )
            continue
        if row.scope == "all" and held.scope != "all":
            connection.execute(
                sa.update(SUPPRESSIONS)
                .where(address == new)
                .values(scope="all", reason=row.reason, source=row.source, job_id=row.job_id)
            )
        connection.execute(sa.delete(SUPPRESSIONS).where(address == row.address))


def downgrade() -> None:
    """Nothing to undo: the ASCII form is the one earlier code matched envelopes with."""


def _sqlite_octets(column: sa.ColumnElement[str]) -> sa.ColumnElement[int]:
    return sa.func.length(sa.cast(column, sa.LargeBinary))


def _ascii_form(address: str) -> str:
    """The address lower-cased with its domain in IDNA ASCII; as it is if not an address."""
    try:
        result = validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        return address
    return f"{result.local_part}@{result.ascii_domain}".lower()
