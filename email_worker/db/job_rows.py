"""The row of a new email job, without SQLAlchemy: its values, and its INSERT through psycopg.

One rule for both ways a job is stored: :func:`job_values` checks a new job and gives
its row, which :func:`email_worker.db.new_jobs.insert_job` writes through SQLAlchemy
(the model's column types seal the personal fields) and :func:`insert` writes through a
psycopg connection of :mod:`email_worker.db.direct` (sealing them here, as those types
would). The INSERT of :func:`insert` is built from :data:`INSERTED` and :data:`SEALED`,
which a test holds to the model's columns and types.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import TYPE_CHECKING, Any

from email_worker.db import status as st
from email_worker.db.sealing import lookup_hash, lookup_hashes, seal_json, seal_text
from email_worker.db.timestamps import POSTGRESQL_UTC_NOW

if TYPE_CHECKING:
    import psycopg

TABLE = "email_jobs"
# The stored request of a test key's job carries this field, set by the web app only: the
# worker delivers such a job to the outbox. A request cannot name it (validation refuses
# any field it does not know).
TEST_SEND_FIELD = "email_worker_test_send"
# The columns a new job is stored with; the database's clock fills created_at and updated_at.
INSERTED = (
    "id",
    "job_type",
    "recipient_email",
    "recipient_hash",
    "recipient_hashes",
    "subject",
    "template_id",
    "template_data",
    "payload",
    "status",
    "priority",
    "retry_count",
    "max_retries",
    "scheduled_at",
    "idempotency_key",
    "api_key_id",
)
STAMPED = ("created_at", "updated_at")
# The sealed columns among them, each True when it holds JSON (the model's Sealed types).
SEALED = {"recipient_email": False, "subject": False, "template_data": True, "payload": True}

# No conflict target: the primary key and the unique index on the idempotency key decide,
# so two producers racing with one id or one key get one row.
INSERT_SQL = (
    f"INSERT INTO {TABLE} ({', '.join((*INSERTED, *STAMPED))}) "
    f"VALUES ({', '.join([*(f'%({name})s' for name in INSERTED), *[POSTGRESQL_UTC_NOW] * 2])}) "
    "ON CONFLICT DO NOTHING RETURNING id"
)
_FOUND_BY = {
    "id": f"SELECT id FROM {TABLE} WHERE id = %s",
    "idempotency_key": f"SELECT id FROM {TABLE} WHERE idempotency_key = %s",
}


def job_values(
    *,
    job_type: str,
    recipient_email: str,
    payload: dict[str, Any],
    subject: str | None = None,
    template_id: str | None = None,
    template_data: dict[str, Any] | None = None,
    priority: int = 0,
    max_retries: int = 3,
    scheduled_at: dt.datetime | None = None,
    idempotency_key: str | None = None,
    status: str = st.PENDING,
    job_id: uuid.UUID | None = None,
    retry_count: int = 0,
    api_key_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    """The row of a ``pending`` or ``scheduled`` job, in the clear; ValueError for a bad one.

    ``job_id`` is the job's id when the caller has one (a producer that publishes
    without this package names its job by the message's id); ``retry_count`` the
    attempts already made (a fast-path send whose retry is stored); ``api_key_id`` the
    API key that sent it over HTTP, the only one that may read it. Both
    :func:`insert` and :func:`email_worker.db.new_jobs.insert_job` store this row.
    """
    if status not in st.INITIAL:
        raise ValueError(f"a new job is pending or scheduled, not {status!r}")
    if status == st.SCHEDULED and scheduled_at is None:
        raise ValueError("a scheduled job needs scheduled_at")
    if retry_count < 0:
        raise ValueError(f"retry_count cannot be negative: {retry_count}")
    return {
        "id": job_id or uuid.uuid4(),
        "job_type": job_type,
        "recipient_email": recipient_email,
        "recipient_hash": lookup_hash(recipient_email),
        "recipient_hashes": lookup_hashes([recipient_email, *request_recipients(payload)]),
        "subject": subject,
        "template_id": template_id,
        "template_data": template_data,
        "payload": payload,
        "status": status,
        "priority": priority,
        "retry_count": retry_count,
        "max_retries": max_retries,
        "scheduled_at": scheduled_at,
        "idempotency_key": idempotency_key,
        "api_key_id": api_key_id,
    }


def request_recipients(payload: Any) -> list[str]:
    """Every address of a request's to, cc and bcc (each a string or a list of them)."""
    found: list[str] = []
    for field in ("to", "cc", "bcc"):
        given = payload.get(field) if isinstance(payload, dict) else None
        listed = [given] if isinstance(given, str) else given if isinstance(given, list) else []
        found += [address for address in listed if isinstance(address, str)]
    return found


def sealed(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with each sealed column's value sealed, as the model's column types seal it."""
    row = dict(values)
    for name, is_json in SEALED.items():
        value = row[name]
        if value is not None:
            purpose = f"{TABLE}.{name}"
            row[name] = seal_json(purpose, value) if is_json else seal_text(purpose, str(value))
    return row


def insert(connection: psycopg.Connection[Any], values: dict[str, Any]) -> tuple[uuid.UUID, bool]:
    """Store the row of :func:`job_values` on ``connection``; its id and whether it is new.

    A job whose id or idempotency key is already stored is not inserted again: the stored
    job's id is returned, with False.
    """
    inserted = connection.execute(INSERT_SQL, sealed(values)).fetchone()
    if inserted is not None:
        return inserted[0], True
    # The insert did nothing: a row with this id, or else with this key, is stored.
    for column, sql in _FOUND_BY.items():
        value = values[column]
        if value is not None:
            found = connection.execute(sql, (value,)).fetchone()
            if found is not None:
                return found[0], False
    raise LookupError("the job conflicts with a stored one that could not be read back")
