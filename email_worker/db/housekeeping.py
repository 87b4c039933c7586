"""Beat's housekeeping on jobs: dispatch due ones, relay stranded ones, reap lost sends, purge.

Delivery is at least once. A worker that dies mid-send leaves its row in ``sending``.
Whether the provider took the message is unknown, so when the lease runs out
:func:`reap_expired_leases` counts the attempt and requeues the job while attempts
remain (the email may then go out twice), and otherwise fails it with "delivery
unknown" rather than risk sending it yet again.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import and_, delete, func, or_, update
from sqlalchemy.orm import Session

from email_worker.db import status as st
from email_worker.db.dialect import plus_seconds
from email_worker.db.job_table import at, lock_ids, rowcount
from email_worker.db.models import EmailJob, EmailTracking, naive_utc

LEASE_EXPIRED = "lease expired: the worker sending this email was lost; sending again"
LEASE_LOST_FOR_GOOD = (
    "lease expired: the worker sending this email was lost and no attempts are left; "
    "delivery is unknown"
)

# How many rows beat's queries take at a time unless told otherwise.
BATCH_LIMIT = 500

# A pending job whose message the broker refused (down, or full): beat's dispatcher
# publishes it as soon as it can, instead of the stranded-job relay much later.
UNPUBLISHED = "not published yet: the broker refused its message; beat publishes it"


def dispatch_due_jobs(
    session: Session,
    now: dt.datetime | None = None,
    limit: int = BATCH_LIMIT,
    *,
    hold_seconds: float | None = None,
) -> list[uuid.UUID]:
    """Move due scheduled jobs to ``pending``; returns the ids to publish after commit.

    Pending jobs flagged by :func:`mark_unpublished` are returned too, unflagged.

    With ``hold_seconds`` (the longest delay the broker holds), due ``retrying`` jobs
    parked in the database for a longer wait are returned too: no broker message is
    waiting for them. A retry is parked when its ``scheduled_at`` is more than
    ``hold_seconds`` after its ``updated_at`` (when the retry was recorded); once
    returned, its ``updated_at`` becomes ``now`` so it is not returned again.
    """
    now = naive_utc(now)
    due_now = EmailJob.scheduled_at <= at(now)
    wanted: Any = and_(EmailJob.status == st.SCHEDULED, due_now)
    if hold_seconds is not None:
        recorded = func.coalesce(EmailJob.updated_at, EmailJob.created_at)
        parked = and_(
            EmailJob.status == st.RETRYING,
            due_now,
            EmailJob.scheduled_at > plus_seconds(recorded, hold_seconds),
        )
        wanted = or_(wanted, parked)
    unpublished = and_(EmailJob.status == st.PENDING, due_now, EmailJob.last_error == UNPUBLISHED)
    wanted = or_(wanted, unpublished)
    due = lock_ids(session, wanted, order_by=EmailJob.scheduled_at, limit=limit)
    if due:
        chosen = EmailJob.id.in_(due)
        session.execute(
            update(EmailJob)
            .where(chosen, EmailJob.status == st.SCHEDULED)
            .values(status=st.PENDING, updated_at=at(now))
        )
        session.execute(
            update(EmailJob)
            .where(chosen, EmailJob.status == st.PENDING, EmailJob.last_error == UNPUBLISHED)
            .values(last_error=None, updated_at=at(now))
        )
        session.execute(
            update(EmailJob)
            .where(chosen, EmailJob.status == st.RETRYING)
            .values(updated_at=at(now))
        )
    return due


def mark_unpublished(
    session: Session, job_ids: list[uuid.UUID], now: dt.datetime | None = None
) -> int:
    """Flag pending jobs whose message the broker refused, for the next dispatch.

    A job's ``scheduled_at`` is kept when it has one (a short countdown still waits for
    it), else set to ``now``, so the dispatcher finds it through the index on waiting
    jobs. Returns how many were flagged.
    """
    if not job_ids:
        return 0
    result = session.execute(
        update(EmailJob)
        .where(EmailJob.id.in_(job_ids), EmailJob.status == st.PENDING)
        .values(
            last_error=UNPUBLISHED,
            scheduled_at=func.coalesce(EmailJob.scheduled_at, at(naive_utc(now))),
        )
    )
    return rowcount(result)


def stranded_jobs(
    session: Session,
    now: dt.datetime | None = None,
    older_than_seconds: float = 300.0,
    limit: int = BATCH_LIMIT,
) -> list[uuid.UUID]:
    """Pending or retrying jobs overdue by ``older_than_seconds``, to publish again.

    Their ``updated_at`` is set to ``now`` (the database's time when None), so another
    relay in the same window passes them by and they come back only if they are still
    stuck a window later.
    """
    now = naive_utc(now)
    cutoff = at(now, -older_than_seconds)
    due_since = func.coalesce(EmailJob.scheduled_at, EmailJob.created_at)
    ids = lock_ids(
        session,
        EmailJob.status.in_(st.CLAIMABLE),
        due_since <= cutoff,
        func.coalesce(EmailJob.updated_at, EmailJob.created_at) <= cutoff,
        order_by=due_since,
        limit=limit,
    )
    if ids:
        session.execute(update(EmailJob).where(EmailJob.id.in_(ids)).values(updated_at=at(now)))
    return ids


def reap_expired_leases(
    session: Session, now: dt.datetime | None = None, *, grace_seconds: float = 0
) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """Requeue (as ``retrying``) or fail jobs whose worker was lost mid-send.

    A lost send counts as an attempt. The claim is cleared, so the lost worker can no
    longer fail or retry the job; a requeued job may be claimed again ``grace_seconds``
    after ``now`` (the database's time when None), which gives a late record of
    ``sent`` from the lost worker the time to land first. Returns the ids to publish
    again after commit, and the ids of the jobs failed because no attempts were left.
    """
    now = naive_utc(now)
    expired = (EmailJob.status == st.SENDING, EmailJob.lease_expires_at < at(now))
    failed = list(
        session.scalars(
            update(EmailJob)
            .where(*expired, EmailJob.retry_count >= EmailJob.max_retries)
            .values(
                status=st.FAILED,
                last_error=LEASE_LOST_FOR_GOOD,
                lease_expires_at=None,
                claim_token=None,
                updated_at=at(now),
            )
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
                scheduled_at=at(now, grace_seconds),
                lease_expires_at=None,
                claim_token=None,
                updated_at=at(now),
            )
            .returning(EmailJob.id)
        )
    )
    session.flush()
    return requeued, failed


def delete_job(session: Session, job_id: uuid.UUID) -> bool:
    """Delete a job and its tracking rows; False if there was no such job."""
    session.execute(delete(EmailTracking).where(EmailTracking.job_id == job_id))
    return rowcount(session.execute(delete(EmailJob).where(EmailJob.id == job_id))) == 1


def delete_old_jobs(session: Session, older_than: dt.datetime, batch_size: int = 1000) -> int:
    """Delete finished jobs created before ``older_than``, with their tracking rows.

    Works in batches of ``batch_size`` and commits after each one, so a large purge
    neither holds its locks for long nor builds one huge transaction.
    """
    deleted = 0
    while True:
        ids = lock_ids(
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
