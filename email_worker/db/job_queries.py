"""Reading jobs back: one job with its tracking, an API key's job, listings, the oldest due."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from email_worker.db import status as st
from email_worker.db.models import EmailJob, naive_utc
from email_worker.db.sealing import lookup_hash


def get_job(session: Session, job_id: uuid.UUID) -> EmailJob | None:
    """The job with its tracking rows, or None."""
    statement = (
        select(EmailJob)
        .where(EmailJob.id == job_id)
        .options(selectinload(EmailJob.tracking))
        .execution_options(populate_existing=True)
    )
    return session.scalars(statement).one_or_none()


def get_api_job(session: Session, job_id: uuid.UUID, api_key_id: uuid.UUID) -> EmailJob | None:
    """The job with this id if the API key ``api_key_id`` sent it, else None.

    Another key's job and a job that does not exist are one answer, in one query.
    """
    statement = select(EmailJob).where(EmailJob.id == job_id, EmailJob.api_key_id == api_key_id)
    return session.scalars(statement.execution_options(populate_existing=True)).one_or_none()


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
    """Jobs matching every filter given, newest first.

    ``since`` and ``until`` may be aware datetimes or naive ones, taken as UTC.
    """
    statement = select(EmailJob)
    if status is not None:
        statement = statement.where(EmailJob.status == status)
    if job_type is not None:
        statement = statement.where(EmailJob.job_type == job_type)
    if recipient is not None:
        statement = statement.where(EmailJob.recipient_hash == lookup_hash(recipient))
    if since is not None:
        statement = statement.where(EmailJob.created_at >= naive_utc(since))
    if until is not None:
        statement = statement.where(EmailJob.created_at < naive_utc(until))
    statement = (
        statement.order_by(EmailJob.created_at.desc(), EmailJob.id).limit(limit).offset(offset)
    )
    return list(session.scalars(statement))


def oldest_due_age(session: Session) -> float:
    """Seconds since the oldest due job that is not sent yet became due (0 when none is)."""
    due_since = func.coalesce(EmailJob.scheduled_at, EmailJob.created_at)
    now = func.timezone("UTC", func.now())  # the columns hold naive UTC times
    age = session.execute(
        select(func.extract("epoch", now - func.min(due_since))).where(
            EmailJob.status.in_(st.NOT_SENT_YET), due_since <= now
        )
    ).scalar()
    return max(float(age or 0.0), 0.0)
