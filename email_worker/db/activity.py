"""What the service has been doing lately, for the console's overview: sends and failures of
the last hour by kind and provider, and the bulk sends still in progress. Reads only.

Only tracked and scheduled sends have a row in ``email_jobs``; fast-path sends are counted
by the workers' metrics (``emails_sent_total``) and not here. A job is looked at if it was
created in the day before the window began (``created_at`` is indexed), so the count stays
a bounded read however long the table is.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from email_worker.db import bulk
from email_worker.db import status as st
from email_worker.db.models import EmailBulk, EmailJob, naive_utc

LOOK_BACK = dt.timedelta(days=1)
"""How long before the window a job may have been created and still be counted."""
MAX_BULKS = 50


@dataclass(frozen=True)
class KindProviderCount:
    """One kind through one provider: jobs sent, failed and bounced in the window."""

    kind: str
    provider: str | None  # None: no provider took it (failed before any was asked)
    sent: int
    failed: int
    bounced: int


@dataclass(frozen=True)
class BulkProgress:
    """A bulk send not finished yet, with its recipients counted by status."""

    id: uuid.UUID
    kind: str
    template_id: str
    status: str
    total: int
    created_at: dt.datetime
    counts: dict[str, int]

    @property
    def done(self) -> int:
        """Recipients whose send is over: sent, refused, failed or cancelled."""
        return sum(n for status, n in self.counts.items() if status not in bulk.ACTIVE)


def sends_since(session: Session, since: dt.datetime) -> list[KindProviderCount]:
    """Tracked jobs sent, failed or bounced at or after ``since``, by kind and provider."""
    since = naive_utc(since)
    sent = EmailJob.sent_at >= since
    ended = EmailJob.updated_at >= since
    rows = session.execute(
        select(
            EmailJob.job_type,
            EmailJob.provider,
            func.count().filter(sent),
            func.count().filter(ended, EmailJob.status == st.FAILED),
            func.count().filter(ended, EmailJob.status == st.BOUNCED),
        )
        .where(EmailJob.created_at >= since - LOOK_BACK, or_(sent, ended))
        .group_by(EmailJob.job_type, EmailJob.provider)
        .order_by(EmailJob.job_type, EmailJob.provider)
    )
    return [
        KindProviderCount(kind, provider, int(s), int(f), int(b))
        for kind, provider, s, f, b in rows
        if s or f or b
    ]


def bulks_in_progress(session: Session, limit: int = MAX_BULKS) -> list[BulkProgress]:
    """Bulk sends pending or sending, newest first, each with its counts per status."""
    found = session.scalars(
        select(EmailBulk)
        .where(EmailBulk.status.in_((bulk.BULK_PENDING, bulk.BULK_SENDING)))
        .order_by(EmailBulk.created_at.desc(), EmailBulk.id)
        .limit(limit)
    )
    return [
        BulkProgress(
            id=row.id,
            kind=row.kind,
            template_id=row.template_id,
            status=row.status,
            total=row.total,
            created_at=row.created_at,
            counts=bulk.status_counts(session, row.id),
        )
        for row in found
    ]
