"""Jobs kept in the database, and the messages that hand them to the workers.

The producer stores tracked and scheduled sends here; the worker stores a send whose
retry must wait longer than the broker may hold a message, or whose retry could not be
published; beat publishes due and stranded jobs. A job's message carries only its id.

On PostgreSQL the row is stored through psycopg alone (:mod:`email_worker.db.direct`),
so a producer's first tracked call does not import SQLAlchemy; on any other database,
through the engines. Both store the row of :func:`email_worker.db.job_rows.job_values`,
retry once on a pooled connection the server dropped, and fail alike.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from email_worker.config import get_settings
from email_worker.db import direct, job_rows, status
from email_worker.db.job_rows import TEST_SEND_FIELD
from email_worker.db.timestamps import naive_utc
from email_worker.errors import InvalidEmailRequest, TransientError
from email_worker.kinds import Kind, get_kind, kind_for_task, row_priority
from email_worker.mime.email_request import EmailRequest

SUBJECT_COLUMN = 500  # email_jobs.subject; the payload keeps the whole subject
# Job ids for task ids that are not UUIDs (a producer without this package may choose any).
_TASK_ID_NAMESPACE = uuid.UUID("6f1c2b0e-9a53-4c1e-8f0a-3d2f6b7e5a41")


class DatabaseUnavailable(TransientError):
    """The primary database could not store a tracked or scheduled send; nothing was queued."""


def job_id_for(task_id: str | None) -> uuid.UUID:
    """The job id of a message: its task id when that is a UUID, else one derived from it.

    One message, one job: a redelivered message finds the row its first delivery stored.
    """
    if not task_id:
        return uuid.uuid4()
    try:
        return uuid.UUID(task_id)
    except ValueError:
        return uuid.uuid5(_TASK_ID_NAMESPACE, task_id)


def store_job(
    kind: Kind,
    request: EmailRequest,
    *,
    scheduled_at: dt.datetime | None,
    scheduled: bool,
    job_id: uuid.UUID | None = None,
    attempts_made: int = 0,
    api_key_id: uuid.UUID | None = None,
    test_send: bool = False,
) -> tuple[uuid.UUID, bool]:
    """Commit the job row on the primary; returns its id and whether it is new.

    A row that already has ``job_id`` (or the request's idempotency key) is returned
    as it is, with False: its message was published when it was stored. ``api_key_id``
    is the API key that sent it over HTTP; ``test_send`` marks the stored request of a
    test key's send, which the worker delivers only to the outbox.
    """
    payload = request.to_payload()
    if test_send:
        payload[TEST_SEND_FIELD] = True
    values = job_rows.job_values(
        job_id=job_id,
        job_type=request.kind,
        recipient_email=request.to[0],
        payload=payload,
        subject=request.subject[:SUBJECT_COLUMN] if request.subject else None,
        template_id=request.template_id,
        template_data=request.data or None,
        priority=row_priority(request.priority),
        max_retries=kind.retries_allowed(get_settings().max_retries),
        retry_count=attempts_made,
        scheduled_at=naive_utc(scheduled_at),
        idempotency_key=request.idempotency_key,
        status=status.SCHEDULED if scheduled else status.PENDING,
        api_key_id=api_key_id,
    )
    store = _store_direct if direct.applies() else _store_with_engines
    for attempt in range(2):
        try:
            return store(values)
        except _Retryable as exc:
            # A pooled connection the server dropped (a restart): once more, on a new one.
            if attempt:
                raise _unavailable(exc.cause) from None
    raise AssertionError("unreachable")


class _Retryable(Exception):
    """A pooled connection was dropped: the next attempt connects again."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(cause)
        self.cause = cause


def _store_direct(values: dict[str, Any]) -> tuple[uuid.UUID, bool]:
    import psycopg

    try:
        # Without a transaction: the INSERT is the only round trip.
        with direct.primary(transaction=False) as connection:
            return job_rows.insert(connection, values)
    except (psycopg.DataError, psycopg.IntegrityError) as exc:
        raise _unstorable(exc) from None
    except direct.DatabaseUnreachable as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, Exception) else exc
        if exc.connection_dropped:
            raise _Retryable(cause) from None
        raise _unavailable(cause) from None
    except psycopg.Error as exc:
        raise _unavailable(exc) from None


def _store_with_engines(values: dict[str, Any]) -> tuple[uuid.UUID, bool]:
    from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError

    from email_worker.db import new_jobs
    from email_worker.db.session import primary_statement

    try:
        with primary_statement() as session:
            return new_jobs.insert_values(session, values)
    except (DataError, IntegrityError) as exc:
        raise _unstorable(exc.orig or exc) from None
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise _Retryable(exc) from None
        raise _unavailable(exc) from None
    except SQLAlchemyError as exc:
        raise _unavailable(exc) from None


def _unstorable(exc: BaseException) -> InvalidEmailRequest:
    # The request passed validation but the row cannot hold it: not an outage.
    cause = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return InvalidEmailRequest("payload", f"the job cannot be stored: {cause}")


def _unavailable(exc: Exception) -> DatabaseUnavailable:
    return DatabaseUnavailable(
        f"cannot store the job on the primary database ({type(exc).__name__}); nothing was queued"
    )


def mark_unpublished(job_ids: list[uuid.UUID]) -> bool:
    """Flag stored jobs whose message the broker refused, so beat's next dispatch publishes
    them (within seconds of the broker taking messages again, not after STRANDED_AFTER).

    Returns whether they were flagged; if the primary cannot be reached either, the
    stranded-job relay still finds them later.
    """
    from sqlalchemy.exc import SQLAlchemyError  # a broker that refused: not the common path

    from email_worker.db import housekeeping
    from email_worker.db.session import primary_statement

    try:
        with primary_statement() as session:
            housekeeping.mark_unpublished(session, job_ids)
    except SQLAlchemyError:
        return False
    return True


def publish_job(app: Any, job_id: uuid.UUID, job_type: str, priority: str, **options: Any) -> None:
    """Publish the message for a stored job (beat's dispatcher and relays, the reaper)."""
    kind = kind_for_task(f"email_worker.send_{job_type}") or get_kind("email")
    app.send_task(
        kind.task_name,
        kwargs={"job_id": str(job_id)},
        queue=get_settings().queues[priority],
        ignore_result=True,
        kwargsrepr=repr({"job_id": str(job_id)}),
        **options,
    )
