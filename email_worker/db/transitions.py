"""A job's status changes after its claim: retry, release, fail, cancel, delivery events.

Each is one conditional UPDATE whose WHERE clause is the transition's guard (the table
is in :mod:`email_worker.db.status`); a worker names the ``claim_token`` of its claim,
so a worker whose lease was reaped, and whose job another worker has claimed since,
cannot fail it or schedule a retry of it.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from email_worker.db import status as st
from email_worker.db.job_table import at, held_by, move
from email_worker.db.models import EmailJob, EmailTracking, naive_utc


class RetryOutcome(enum.StrEnum):
    """What :func:`mark_retrying` did.

    ``RETRYING``: the attempt is counted and the job waits for its next one.
    ``NO_ATTEMPTS_LEFT``: the claim is still this worker's, but the job has used
    every attempt; the caller fails it (:func:`mark_failed` with the same token).
    ``STALE``: the claim is no longer this worker's (its lease was reaped, the job
    was claimed again, sent, failed or deleted); the caller leaves the job alone.
    """

    RETRYING = "retrying"
    NO_ATTEMPTS_LEFT = "no_attempts_left"
    STALE = "stale"


_EVENT_COLUMNS = {
    st.DELIVERED: EmailTracking.delivered_at,
    st.OPENED: EmailTracking.opened_at,
    st.CLICKED: EmailTracking.clicked_at,
}


def mark_retrying(
    session: Session,
    job_id: uuid.UUID,
    *,
    claim_token: uuid.UUID,
    error: str,
    next_attempt_at: dt.datetime | None = None,
    retry_in_seconds: float | None = None,
    payload: dict[str, Any] | None = None,
) -> RetryOutcome:
    """Count a failed attempt of the claim ``claim_token`` and wait for the next one.

    The next attempt is due at ``next_attempt_at``, or ``retry_in_seconds`` from now
    by the database's clock (give one of them). ``payload`` replaces the stored
    request, e.g. narrowed to the recipients still to reach. ``updated_at`` becomes
    the database's time, so beat can tell a retry parked for a long wait (see
    :func:`email_worker.db.housekeeping.dispatch_due_jobs`). On ``RETRYING`` the caller
    publishes the retry after committing; on ``NO_ATTEMPTS_LEFT`` it calls
    :func:`mark_failed` with the same token; on ``STALE`` it does nothing more.
    """
    if (next_attempt_at is None) == (retry_in_seconds is None):
        raise ValueError("give either next_attempt_at or retry_in_seconds")
    due = at(naive_utc(next_attempt_at), retry_in_seconds or 0)
    replaced = {} if payload is None else {"payload": payload}
    moved = move(
        session,
        job_id,
        {st.SENDING},
        held_by(claim_token),
        EmailJob.retry_count < EmailJob.max_retries,
        status=st.RETRYING,
        retry_count=EmailJob.retry_count + 1,
        last_error=error,
        scheduled_at=due,
        lease_expires_at=None,
        claim_token=None,
        **replaced,
    )
    if moved:
        return RetryOutcome.RETRYING
    held = select(EmailJob.id).where(EmailJob.id == job_id, held_by(claim_token))
    if session.scalars(held).first() is not None:
        return RetryOutcome.NO_ATTEMPTS_LEFT
    return RetryOutcome.STALE


def release_claim(
    session: Session, job_id: uuid.UUID, *, claim_token: uuid.UUID, retry_in_seconds: float
) -> bool:
    """Give a claimed job back, due again in ``retry_in_seconds``, without counting an attempt.

    For a send that never reached a provider (a rate limit had no token for it).
    """
    return move(
        session,
        job_id,
        {st.SENDING},
        held_by(claim_token),
        status=st.RETRYING,
        scheduled_at=at(None, retry_in_seconds),
        lease_expires_at=None,
        claim_token=None,
    )


def mark_failed(
    session: Session, job_id: uuid.UUID, *, error: str, claim_token: uuid.UUID | None = None
) -> bool:
    """Fail a job that has not been sent; the error is kept on the job and its tracking.

    With ``claim_token`` only the ``sending`` job of that claim fails (a worker's
    verdict on its own send). Without one (an operator, a message set aside) any job
    not sent yet fails, ``sending`` included.
    """
    guard: tuple[Any, ...]
    if claim_token is None:
        allowed, guard = st.FAILABLE, ()
    else:
        allowed, guard = frozenset({st.SENDING}), (held_by(claim_token),)
    moved = move(
        session,
        job_id,
        allowed,
        *guard,
        status=st.FAILED,
        last_error=error,
        lease_expires_at=None,
        claim_token=None,
    )
    if moved:
        session.add(EmailTracking(job_id=job_id, status=st.FAILED, error_message=error))
        session.flush()
    return moved


def set_aside_job(session: Session, job_id: uuid.UUID, *, error: str) -> bool:
    """Fail a job whose message keeps killing worker processes, whoever holds it.

    The same as :func:`mark_failed` without a token: any status not sent yet,
    ``sending`` included, moves to ``failed`` with a failed tracking row.
    """
    return mark_failed(session, job_id, error=error)


def cancel_job(session: Session, job_id: uuid.UUID) -> bool:
    """Cancel a job that is still pending or scheduled; False once a worker has it."""
    return move(session, job_id, st.CANCELLABLE, status=st.CANCELLED)


def latest_sent_tracking(job_id: uuid.UUID) -> Any:
    """The id of the job's latest tracking row of a sent message, as a scalar subquery."""
    return (
        select(EmailTracking.id)
        .where(EmailTracking.job_id == job_id, EmailTracking.sent_at.is_not(None))
        .order_by(EmailTracking.created_at.desc())
        .limit(1)
        .scalar_subquery()
    )


def record_event(session: Session, job_id: uuid.UUID, event: str, at: dt.datetime) -> bool:
    """Apply a delivered, opened, clicked or bounced event; the status never moves back.

    The event's time is kept on the latest sent tracking row even when the status
    does not move (a late "delivered" after "opened" still records when it came).
    """
    allowed = st.allowed_before(event)
    moved = move(session, job_id, allowed, status=event)
    latest = latest_sent_tracking(job_id)
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
