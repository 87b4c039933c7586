"""Email jobs: create, claim, finish and look them up, plus beat's housekeeping.

Every status change of a job happens in this module, each as one conditional UPDATE
whose WHERE clause is the transition's guard (the table is in
:mod:`email_worker.db.status`). Two workers, a worker and a webhook, or two beat
processes racing on one row therefore cannot move it backwards or twice. The caller
owns the transaction: these functions flush but do not commit, except
:func:`delete_old_jobs`, which commits after each batch.

Delivery is at least once. A worker that dies mid-send leaves its row in ``sending``.
Whether the provider took the message is unknown, so when the lease runs out
:func:`reap_expired_leases` counts the attempt and requeues the job while attempts
remain (the email may then go out twice), and otherwise fails it with "delivery
unknown" rather than risk sending it yet again.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection
from typing import Any

from sqlalchemy import CursorResult, case, delete, func, or_, select, update
from sqlalchemy.orm import Session, selectinload

from email_worker.db import status as st
from email_worker.db.dialect import insert
from email_worker.db.models import EmailJob, EmailTracking, utcnow

LEASE_EXPIRED = "lease expired: the worker sending this email was lost; sending again"
LEASE_LOST_FOR_GOOD = (
    "lease expired: the worker sending this email was lost and no attempts are left; "
    "delivery is unknown"
)

# Celery's eta and this database's clock may differ a little; a message that arrives
# this early for its job still claims it.
CLAIM_SLACK = dt.timedelta(seconds=2)

_EVENT_COLUMNS = {
    st.DELIVERED: EmailTracking.delivered_at,
    st.OPENED: EmailTracking.opened_at,
    st.CLICKED: EmailTracking.clicked_at,
}


def create_job(
    session: Session,
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
) -> tuple[EmailJob, bool]:
    """Insert a ``pending`` or ``scheduled`` job; returns it and whether it is new.

    A job whose idempotency key was seen before is not inserted again: the first
    job with that key is returned, with False, and its message must not be published
    a second time.
    """
    if status not in st.INITIAL:
        raise ValueError(f"a new job is pending or scheduled, not {status!r}")
    if status == st.SCHEDULED and scheduled_at is None:
        raise ValueError("a scheduled job needs scheduled_at")
    now = utcnow()
    statement = (
        insert(session, EmailJob)
        .values(
            id=uuid.uuid4(),
            job_type=job_type,
            recipient_email=recipient_email,
            subject=subject,
            template_id=template_id,
            template_data=template_data,
            payload=payload,
            status=status,
            priority=priority,
            retry_count=0,
            max_retries=max_retries,
            scheduled_at=scheduled_at,
            idempotency_key=idempotency_key,
            created_at=now,
            updated_at=now,
        )
        # The unique index decides, so two producers racing with one key get one row.
        .on_conflict_do_nothing(index_elements=[EmailJob.idempotency_key])
        .returning(EmailJob)
    )
    job = session.scalars(statement).one_or_none()
    if job is not None:
        return job, True
    existing = select(EmailJob).where(EmailJob.idempotency_key == idempotency_key)
    return session.scalars(existing).one(), False


def claim_job(
    session: Session, job_id: uuid.UUID, lease_seconds: float, *, now: dt.datetime | None = None
) -> EmailJob | None:
    """Move a pending or retrying job that is due to ``sending``; None if it cannot be claimed.

    None means another claim got there first, the job is finished or cancelled, or its
    ``scheduled_at`` (a retry's backoff, a short countdown) has not come yet.
    """
    now = now or utcnow()
    statement = (
        update(EmailJob)
        .where(
            EmailJob.id == job_id,
            EmailJob.status.in_(st.CLAIMABLE),
            # A retry waits out its backoff even if an extra message for it comes early.
            or_(EmailJob.scheduled_at.is_(None), EmailJob.scheduled_at <= now + CLAIM_SLACK),
        )
        .values(
            status=st.SENDING,
            lease_expires_at=now + dt.timedelta(seconds=lease_seconds),
            updated_at=now,
        )
        .returning(EmailJob)
        .execution_options(populate_existing=True)
    )
    return session.scalars(statement).one_or_none()


def mark_sent(
    session: Session,
    job_id: uuid.UUID,
    *,
    provider: str,
    provider_message_id: str | None,
    at: dt.datetime | None = None,
) -> bool:
    """Record the provider's acceptance; returns whether the job moved to ``sent``.

    The tracking row is written even when the job has moved on (its lease was reaped,
    or a webhook came first): the message did leave, and webhooks find it by its id.
    """
    at = at or utcnow()
    moved = _move(
        session,
        job_id,
        st.SENDABLE,
        status=st.SENT,
        sent_at=at,
        provider=provider,
        provider_message_id=provider_message_id,
        lease_expires_at=None,
    )
    if moved or session.get(EmailJob, job_id) is not None:
        session.add(
            EmailTracking(
                job_id=job_id,
                provider=provider,
                message_id=provider_message_id,
                status=st.SENT,
                sent_at=at,
            )
        )
        session.flush()
    return moved


def mark_retrying(
    session: Session,
    job_id: uuid.UUID,
    *,
    error: str,
    next_attempt_at: dt.datetime,
    payload: dict[str, Any] | None = None,
) -> bool:
    """Count a failed attempt and wait for ``next_attempt_at``; False if none are left.

    ``payload`` replaces the stored request, e.g. narrowed to the recipients still to
    reach. The caller publishes the retry for ``next_attempt_at`` after committing, or,
    when this returns False, calls :func:`mark_failed`.
    """
    replaced = {} if payload is None else {"payload": payload}
    return _move(
        session,
        job_id,
        {st.SENDING},
        EmailJob.retry_count < EmailJob.max_retries,
        status=st.RETRYING,
        retry_count=EmailJob.retry_count + 1,
        last_error=error,
        scheduled_at=next_attempt_at,
        lease_expires_at=None,
        **replaced,
    )


def mark_failed(session: Session, job_id: uuid.UUID, *, error: str) -> bool:
    """Fail a job that has not been sent; the error is kept on the job and its tracking."""
    moved = _move(
        session, job_id, st.FAILABLE, status=st.FAILED, last_error=error, lease_expires_at=None
    )
    if moved:
        session.add(EmailTracking(job_id=job_id, status=st.FAILED, error_message=error))
        session.flush()
    return moved


def record_event(session: Session, job_id: uuid.UUID, event: str, at: dt.datetime) -> bool:
    """Apply a delivered, opened, clicked or bounced event; the status never moves back.

    The event's time is kept on the latest sent tracking row even when the status
    does not move (a late "delivered" after "opened" still records when it came).
    """
    allowed = st.allowed_before(event)
    moved = _move(session, job_id, allowed, status=event)
    latest = (
        select(EmailTracking.id)
        .where(EmailTracking.job_id == job_id, EmailTracking.sent_at.is_not(None))
        .order_by(EmailTracking.created_at.desc())
        .limit(1)
        .scalar_subquery()
    )
    values: dict[Any, Any] = {
        EmailTracking.status: case(
            (EmailTracking.status.in_(allowed), event), else_=EmailTracking.status
        )
    }
    column = _EVENT_COLUMNS.get(event)
    if column is not None:
        values[column] = func.coalesce(column, at)
    session.execute(update(EmailTracking).where(EmailTracking.id == latest).values(values))
    return moved


def cancel_job(session: Session, job_id: uuid.UUID) -> bool:
    """Cancel a job that is still pending or scheduled; False once a worker has it."""
    return _move(session, job_id, st.CANCELLABLE, status=st.CANCELLED)


def delete_job(session: Session, job_id: uuid.UUID) -> bool:
    """Delete a job and its tracking rows; False if there was no such job."""
    session.execute(delete(EmailTracking).where(EmailTracking.job_id == job_id))
    return _rowcount(session.execute(delete(EmailJob).where(EmailJob.id == job_id))) == 1


def get_job(session: Session, job_id: uuid.UUID) -> EmailJob | None:
    """The job with its tracking rows, or None."""
    statement = (
        select(EmailJob)
        .where(EmailJob.id == job_id)
        .options(selectinload(EmailJob.tracking))
        .execution_options(populate_existing=True)
    )
    return session.scalars(statement).one_or_none()


def get_jobs(session: Session, job_ids: Collection[uuid.UUID]) -> list[EmailJob]:
    """The jobs with these ids that exist, without their tracking rows."""
    if not job_ids:
        return []
    return list(session.scalars(select(EmailJob).where(EmailJob.id.in_(list(job_ids)))))


def list_jobs(
    session: Session,
    *,
    status: str | None = None,
    job_type: str | None = None,
    recipient: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[EmailJob]:
    """Jobs matching every filter given, newest first."""
    statement = select(EmailJob)
    if status is not None:
        statement = statement.where(EmailJob.status == status)
    if job_type is not None:
        statement = statement.where(EmailJob.job_type == job_type)
    if recipient is not None:
        statement = statement.where(EmailJob.recipient_email == recipient)
    if since is not None:
        statement = statement.where(EmailJob.created_at >= since)
    if until is not None:
        statement = statement.where(EmailJob.created_at < until)
    statement = (
        statement.order_by(EmailJob.created_at.desc(), EmailJob.id).limit(limit).offset(offset)
    )
    return list(session.scalars(statement))


def dispatch_due_jobs(session: Session, now: dt.datetime, limit: int) -> list[uuid.UUID]:
    """Move due scheduled jobs to ``pending`` and return their ids to publish after commit."""
    due = _lock_ids(
        session,
        EmailJob.status == st.SCHEDULED,
        EmailJob.scheduled_at <= now,
        order_by=EmailJob.scheduled_at,
        limit=limit,
    )
    if due:
        session.execute(
            update(EmailJob).where(EmailJob.id.in_(due)).values(status=st.PENDING, updated_at=now)
        )
    return due


def stranded_jobs(
    session: Session, now: dt.datetime, older_than_seconds: float, limit: int
) -> list[uuid.UUID]:
    """Pending or retrying jobs overdue by ``older_than_seconds``, to publish again.

    Their ``updated_at`` is set to ``now``, so another relay in the same window
    passes them by and they come back only if they are still stuck a window later.
    """
    cutoff = now - dt.timedelta(seconds=older_than_seconds)
    due_since = func.coalesce(EmailJob.scheduled_at, EmailJob.created_at)
    ids = _lock_ids(
        session,
        EmailJob.status.in_(st.CLAIMABLE),
        due_since <= cutoff,
        func.coalesce(EmailJob.updated_at, EmailJob.created_at) <= cutoff,
        order_by=due_since,
        limit=limit,
    )
    if ids:
        session.execute(update(EmailJob).where(EmailJob.id.in_(ids)).values(updated_at=now))
    return ids


def reap_expired_leases(
    session: Session, now: dt.datetime
) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """Requeue (as ``retrying``) or fail jobs whose worker was lost mid-send.

    A lost send counts as an attempt. Returns the ids to publish again after commit,
    and the ids of the jobs failed because no attempts were left.
    """
    expired = (EmailJob.status == st.SENDING, EmailJob.lease_expires_at < now)
    failed = list(
        session.scalars(
            update(EmailJob)
            .where(*expired, EmailJob.retry_count >= EmailJob.max_retries)
            .values(status=st.FAILED, last_error=LEASE_LOST_FOR_GOOD, lease_expires_at=None)
            .returning(EmailJob.id)
        )
    )
    session.add_all(
        EmailTracking(job_id=job_id, status=st.FAILED, error_message=LEASE_LOST_FOR_GOOD)
        for job_id in failed
    )
    requeued = list(
        session.scalars(
            update(EmailJob)
            .where(*expired, EmailJob.retry_count < EmailJob.max_retries)
            .values(
                status=st.RETRYING,
                retry_count=EmailJob.retry_count + 1,
                last_error=LEASE_EXPIRED,
                scheduled_at=now,
                lease_expires_at=None,
            )
            .returning(EmailJob.id)
        )
    )
    session.flush()
    return requeued, failed


def delete_old_jobs(session: Session, older_than: dt.datetime, batch_size: int = 1000) -> int:
    """Delete finished jobs created before ``older_than``, with their tracking rows.

    Works in batches of ``batch_size`` and commits after each one, so a large purge
    neither holds its locks for long nor builds one huge transaction.
    """
    deleted = 0
    while True:
        ids = _lock_ids(
            session,
            EmailJob.status.in_(st.FINISHED),
            EmailJob.created_at < older_than,
            order_by=EmailJob.created_at,
            limit=batch_size,
        )
        if ids:
            session.execute(delete(EmailTracking).where(EmailTracking.job_id.in_(ids)))
            session.execute(delete(EmailJob).where(EmailJob.id.in_(ids)))
        session.commit()
        deleted += len(ids)
        if len(ids) < batch_size:
            return deleted


def _move(
    session: Session,
    job_id: uuid.UUID,
    allowed: Collection[str],
    *conditions: Any,
    **values: Any,
) -> bool:
    statement = (
        update(EmailJob)
        .where(EmailJob.id == job_id, EmailJob.status.in_(allowed), *conditions)
        .values(**values)
    )
    return _rowcount(session.execute(statement)) == 1


def _lock_ids(session: Session, *conditions: Any, order_by: Any, limit: int) -> list[uuid.UUID]:
    # SKIP LOCKED: concurrent beat processes each take rows nobody else holds.
    # SQLite ignores it, which is fine there: one process owns the file.
    statement = (
        select(EmailJob.id)
        .where(*conditions)
        .order_by(order_by)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(session.scalars(statement))


def _rowcount(result: Any) -> int:
    assert isinstance(result, CursorResult)
    return result.rowcount
