"""Personal data sealed at rest, found by lookup hashes; API keys get scopes.

Every column that holds personal data becomes text holding a value sealed with the
first key of ``ENCRYPTION_KEYS`` (see ``email_worker.db.sealing``), and the rows stored
before are sealed here, a batch at a time: ``email-worker migrate`` needs the keys the
service runs with. Addresses that are looked up get an HMAC column beside them:
``email_jobs.recipient_hash`` (the first recipient) and ``recipient_hashes`` (every
recipient), ``email_bulk_recipients.address_hash``, ``email_events.recipient_hash``, and
``email_suppressions.address_hash``, which becomes that table's key. ``email_jobs``
gains ``personal_data_cleared_at``, set when retention or an erasure clears a job's
personal fields; ``api_keys`` gains ``scopes`` (``send read`` for every key made before).

Downgrading opens every value again (with the same keys) and drops the new columns; a
suppression kept only as a hash (an erased person's) cannot go back and is dropped.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from email_worker.db.job_rows import request_recipients
from email_worker.db.sealing import lookup_hash, lookup_hashes, open_text, seal_text

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BATCH = 1000
JSON = sa.JSON().with_variant(JSONB(), "postgresql")
# Each table's sealed columns: (column, JSON or text, its type before, nullable before).
SEALED: dict[str, list[tuple[str, bool, Any, bool]]] = {
    "email_jobs": [
        ("recipient_email", False, sa.String(255), False),
        ("subject", False, sa.String(500), True),
        ("template_data", True, JSON, True),
        ("payload", True, JSON, True),
        ("recipient_results", True, JSON, True),
    ],
    "email_bulks": [("payload", True, JSON, False)],
    "email_bulk_recipients": [
        ("address", False, sa.String(255), False),
        ("data", True, JSON, False),
    ],
    "email_events": [
        ("recipient", False, sa.String(255), True),
        ("payload", True, JSON, True),
    ],
    "email_suppressions": [("address", False, sa.String(255), False)],
}
KEYS = {
    "email_jobs": ("id",),
    "email_bulks": ("id",),
    "email_bulk_recipients": ("bulk_id", "position"),
    "email_events": ("id",),
    "email_suppressions": ("address",),
}


def upgrade() -> None:
    """Add the hash columns, turn the sealed ones into text, and seal what is stored."""
    postgres = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table("email_jobs") as batch:
        batch.add_column(sa.Column("recipient_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("recipient_hashes", sa.Text(), nullable=True))
        batch.add_column(sa.Column("personal_data_cleared_at", sa.DateTime(), nullable=True))
        batch.drop_index("idx_email_jobs_recipient_email")
    with op.batch_alter_table("email_bulk_recipients") as batch:
        batch.add_column(sa.Column("address_hash", sa.String(64), nullable=True))
    with op.batch_alter_table("email_events") as batch:
        batch.add_column(sa.Column("recipient_hash", sa.String(64), nullable=True))
    with op.batch_alter_table("email_suppressions") as batch:
        batch.add_column(sa.Column("address_hash", sa.String(64), nullable=True))
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(
            sa.Column("scopes", sa.String(100), nullable=False, server_default="send read")
        )
    for table, columns in SEALED.items():
        with op.batch_alter_table(table) as batch:
            for name, _, _, _ in columns:
                using: dict[str, Any] = {"postgresql_using": f"{name}::text"} if postgres else {}
                # The suppression's address is its key until the hash takes over, below.
                nullable = None if table == "email_suppressions" else True
                batch.alter_column(name, type_=sa.Text(), nullable=nullable, **using)
    for table, columns in SEALED.items():
        _rewrite(table, columns, _sealed_row(table, columns))
    with op.batch_alter_table("email_suppressions") as batch:
        batch.drop_constraint("email_suppressions_pkey", type_="primary")
        batch.alter_column("address_hash", nullable=False)
        batch.alter_column("address", nullable=True)
        batch.create_primary_key("email_suppressions_pkey", ["address_hash"])
    op.create_index("idx_email_jobs_recipient_hash", "email_jobs", ["recipient_hash"])
    op.create_index(
        "idx_email_bulk_recipients_address_hash", "email_bulk_recipients", ["address_hash"]
    )
    op.create_index("idx_email_events_recipient_hash", "email_events", ["recipient_hash"])


def downgrade() -> None:
    """Open every sealed value, restore the column types, and drop what 0009 added."""
    postgres = op.get_bind().dialect.name == "postgresql"
    op.drop_index("idx_email_events_recipient_hash", "email_events")
    op.drop_index("idx_email_bulk_recipients_address_hash", "email_bulk_recipients")
    op.drop_index("idx_email_jobs_recipient_hash", "email_jobs")
    op.execute("DELETE FROM email_suppressions WHERE address IS NULL")
    KEYS["email_suppressions"] = ("address_hash",)
    try:
        for table, columns in SEALED.items():
            _rewrite(table, columns, _opened_row(table, columns))
    finally:
        KEYS["email_suppressions"] = ("address",)
    with op.batch_alter_table("email_suppressions") as batch:
        batch.drop_constraint("email_suppressions_pkey", type_="primary")
        batch.create_primary_key("email_suppressions_pkey", ["address"])
    for table, columns in SEALED.items():
        with op.batch_alter_table(table) as batch:
            for name, is_json, before, _ in columns:
                using: dict[str, Any] = {}
                if postgres:
                    using = {"postgresql_using": f"{name}::jsonb" if is_json else name}
                # Left nullable: retention and erasure may have cleared values.
                batch.alter_column(name, type_=before, **using)
    with op.batch_alter_table("email_suppressions") as batch:
        batch.drop_column("address_hash")
    with op.batch_alter_table("email_events") as batch:
        batch.drop_column("recipient_hash")
    with op.batch_alter_table("email_bulk_recipients") as batch:
        batch.drop_column("address_hash")
    with op.batch_alter_table("email_jobs") as batch:
        batch.drop_column("personal_data_cleared_at")
        batch.drop_column("recipient_hashes")
        batch.drop_column("recipient_hash")
        batch.create_index("idx_email_jobs_recipient_email", ["recipient_email"])
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("scopes")


Row = dict[str, Any]


def _rewrite(
    table: str, columns: list[tuple[str, bool, Any, bool]], change: Callable[[Row], Row]
) -> None:
    """Run ``change`` over every row of ``table``, a batch at a time, in key order."""
    connection = op.get_bind()
    keys = KEYS[table]
    names = [name for name, _, _, _ in columns]
    shape = sa.table(table, *(sa.column(n) for n in {*keys, *names, *_extra(table)}))
    key_columns = [shape.c[k] for k in keys]
    after: tuple[Any, ...] | None = None
    while True:
        statement = sa.select(shape).order_by(*key_columns).limit(BATCH)
        if after is not None:
            statement = statement.where(sa.tuple_(*key_columns) > sa.tuple_(*after))
        rows = [dict(row._mapping) for row in connection.execute(statement)]
        if not rows:
            return
        for row in rows:
            values = change(row)
            if values:
                connection.execute(
                    sa.update(shape).where(*(shape.c[k] == row[k] for k in keys)).values(**values)
                )
        after = tuple(rows[-1][k] for k in keys)


def _extra(table: str) -> tuple[str, ...]:
    """The hash columns a table's rewrite fills or reads, beside its sealed ones."""
    return {
        "email_jobs": ("recipient_hash", "recipient_hashes"),
        "email_bulk_recipients": ("address_hash",),
        "email_events": ("recipient_hash",),
        "email_suppressions": ("address_hash",),
    }.get(table, ())


def _sealed_row(table: str, columns: list[tuple[str, bool, Any, bool]]) -> Callable[[Row], Row]:
    seen: set[str] = set()

    def change(row: Row) -> Row:
        values = {
            name: seal_text(f"{table}.{name}", row[name])
            for name, _, _, _ in columns
            if row[name] is not None
        }
        if table == "email_jobs" and row["recipient_email"] is not None:
            values["recipient_hash"] = lookup_hash(row["recipient_email"])
            values["recipient_hashes"] = lookup_hashes(_recipients(row))
        elif table == "email_bulk_recipients":
            values["address_hash"] = lookup_hash(row["address"])
        elif table == "email_events" and row["recipient"] is not None:
            values["recipient_hash"] = lookup_hash(row["recipient"])
        elif table == "email_suppressions":
            hashed = lookup_hash(row["address"])
            if hashed in seen:  # two forms of one address: the first entry stands
                op.get_bind().execute(
                    sa.text("DELETE FROM email_suppressions WHERE address = :address"),
                    {"address": row["address"]},
                )
                return {}
            seen.add(hashed)
            values["address_hash"] = hashed
        return values

    return change


def _recipients(row: Row) -> list[str]:
    """Every recipient of a stored job: its column, and the payload's to, cc and bcc."""
    try:
        payload = json.loads(row["payload"]) if row["payload"] else {}
    except ValueError:
        payload = {}
    return [row["recipient_email"], *request_recipients(payload)]


def _opened_row(table: str, columns: list[tuple[str, bool, Any, bool]]) -> Callable[[Row], Row]:
    def change(row: Row) -> Row:
        return {
            name: open_text(f"{table}.{name}", row[name])
            for name, _, _, _ in columns
            if row[name] is not None
        }

    return change
