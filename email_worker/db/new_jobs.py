"""New email jobs: the row a producer stores before it publishes, and the request it keeps.

The row's values come from :func:`email_worker.db.job_rows.job_values`, which the
producer's path without SQLAlchemy (:func:`email_worker.db.job_rows.insert`) stores too.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row, bindparam, select
from sqlalchemy.orm import Session

from email_worker.db.dialect import insert, utc_now
from email_worker.db.job_rows import INSERTED, STAMPED, job_values
from email_worker.db.job_table import JOBS, run
from email_worker.db.models import EmailJob
from email_worker.kinds import kind_for_task

if TYPE_CHECKING:
    from email_worker.db.send_path import ClaimedJob


def insert_job(session: Session, **job: Any) -> tuple[uuid.UUID, bool]:
    """Insert a ``pending`` or ``scheduled`` job; returns its id and whether it is new.

    ``job`` holds the arguments of :func:`~email_worker.db.job_rows.job_values`. A job
    whose id or idempotency key is already stored is not inserted again: the stored job
    is returned, with False, and its message must not be published a second time.
    """
    return insert_values(session, job_values(**job))


def insert_values(session: Session, values: dict[str, Any]) -> tuple[uuid.UUID, bool]:
    """Insert the row of :func:`~email_worker.db.job_rows.job_values`, as :func:`insert_job`."""
    statement = _insert_statement(insert(session, JOBS))
    inserted = run(session, statement, values).scalar_one_or_none()
    if inserted is not None:
        return inserted, True
    return _existing(session, values["id"], values["idempotency_key"]).id, False


_insert_statements: dict[str, Any] = {}


def _insert_statement(dialect_insert: Any) -> Any:
    """The job INSERT of a dialect, built once: a producer's tracked call runs it every time.

    The table, not the mapped class, and bound parameters rather than values: the send
    path needs only the id back, and building the statement cost as much as running it.
    """
    key = type(dialect_insert).__module__
    if key not in _insert_statements:
        now = utc_now()
        _insert_statements[key] = (
            dialect_insert.values(
                {
                    **{name: bindparam(name, type_=JOBS.c[name].type) for name in INSERTED},
                    **dict.fromkeys(STAMPED, now),
                }
            )
            # The primary key and the unique index decide, so two producers racing with
            # one id or one key get one row (no conflict target: either one counts).
            .on_conflict_do_nothing()
            .returning(JOBS.c.id)
        )
    return _insert_statements[key]


def create_job(session: Session, **job: Any) -> tuple[EmailJob, bool]:
    """Insert a job as :func:`insert_job` does; returns the stored job and whether it is new."""
    job_id, created = insert_job(session, **job)
    stored = session.get(EmailJob, job_id, populate_existing=True)
    assert stored is not None  # just inserted, or found by the conflict
    return stored, created


def _existing(session: Session, job_id: uuid.UUID | None, idempotency_key: str | None) -> EmailJob:
    # The insert did nothing: a row with this id, or else with this key, is stored.
    for column, value in ((EmailJob.id, job_id), (EmailJob.idempotency_key, idempotency_key)):
        if value is not None:
            found = session.scalars(select(EmailJob).where(column == value)).one_or_none()
            if found is not None:
                return found
    raise LookupError("the job conflicts with a stored one that could not be read back")


def request_payload(job: EmailJob | Row[Any] | ClaimedJob) -> dict[str, Any]:
    """The send request stored with ``job``, rebuilt from its columns when it has none.

    Rows written by the original service have no ``payload``; their request is the
    recipient, template and data columns, with the kind when ``job_type`` names a
    registered one (any other job type is sent as a generic email).
    """
    if job.payload is not None:
        return dict(job.payload)
    request: dict[str, Any] = {
        "to": job.recipient_email,
        "template_id": job.template_id,
        "data": dict(job.template_data or {}),
    }
    kind = kind_for_task(f"email_worker.send_{job.job_type}")
    if kind is not None:
        request["kind"] = kind.name
    return request
