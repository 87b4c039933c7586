"""How far behind the sends are: the age of the oldest due job that is not sent yet."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from email_worker.db import status
from email_worker.db.models import EmailJob


def oldest_due_age(session: Session) -> float:
    """Seconds since the oldest job not sent yet became due (0.0 when there is none)."""
    due_since = sa.func.coalesce(EmailJob.scheduled_at, EmailJob.created_at)
    now = sa.func.timezone("UTC", sa.func.now())  # the columns hold naive UTC times
    age = session.execute(
        sa.select(sa.func.extract("epoch", now - sa.func.min(due_since))).where(
            EmailJob.status.in_(status.NOT_SENT_YET), due_since <= now
        )
    ).scalar()
    return float(age or 0.0)
