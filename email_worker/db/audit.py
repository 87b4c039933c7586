"""The audit log: who (an API key, or ``cli``) did what to what, and when.

API key use (once a minute per key), key creation and revocation, and every admin action
(an erasure) write one row. A row never holds an address or a secret: a target is a key's
prefix, a job id, or an address's lookup hash. Rows are written in the session of the
action itself, so an action that is rolled back leaves no record, and one that is
committed always has its record.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from email_worker.db.models import AuditEntry, utcnow
from email_worker.db.session import primary_session

CLI = "cli"
MAX_LIST = 10_000
_TARGET = 255


@dataclass(frozen=True)
class AuditView:
    """One line of the audit log."""

    occurred_at: dt.datetime
    actor: str
    action: str
    target: str | None
    actor_key_id: uuid.UUID | None


def record(
    session: Session,
    actor: str,
    action: str,
    target: str | None = None,
    *,
    key_id: uuid.UUID | None = None,
) -> None:
    """Add a line to the audit log in ``session`` (committed with the action it records)."""
    session.add(
        AuditEntry(
            id=uuid.uuid4(),
            occurred_at=utcnow(),
            actor=actor[:50],
            actor_key_id=key_id,
            action=action[:50],
            target=None if target is None else target[:_TARGET],
        )
    )


def record_now(
    actor: str, action: str, target: str | None = None, *, key_id: uuid.UUID | None = None
) -> None:
    """Add a line to the audit log in a transaction of its own, on the primary."""
    with primary_session() as session:
        record(session, actor, action, target, key_id=key_id)


def recent(limit: int = 50) -> list[AuditView]:
    """The last ``limit`` lines, newest first, from the primary: an auditor sees the last action."""
    if not 1 <= limit <= MAX_LIST:
        raise ValueError(f"--limit is 1 to {MAX_LIST}, not {limit}")
    with primary_session() as session:
        rows = session.scalars(
            sa.select(AuditEntry)
            .order_by(AuditEntry.occurred_at.desc(), AuditEntry.id)
            .limit(limit)
        )
        return [
            AuditView(row.occurred_at, row.actor, row.action, row.target, row.actor_key_id)
            for row in rows
        ]


def about_job(session: Session, job_id: uuid.UUID, actions: list[str]) -> list[AuditView]:
    """The lines of ``actions`` whose target starts with ``job_id``, oldest first."""
    rows = session.scalars(
        sa.select(AuditEntry)
        .where(AuditEntry.target.like(f"{job_id}%"), AuditEntry.action.in_(actions))
        .order_by(AuditEntry.occurred_at)
    )
    return [AuditView(r.occurred_at, r.actor, r.action, r.target, r.actor_key_id) for r in rows]


def resend_targets(session: Session, job_id: uuid.UUID) -> list[str]:
    """The targets (``original -> new``) of the resends ``job_id`` is either side of."""
    rows = session.scalars(
        sa.select(AuditEntry.target).where(
            AuditEntry.action == "job.resend",
            sa.or_(
                AuditEntry.target.like(f"{job_id} -> %"), AuditEntry.target.like(f"% -> {job_id}")
            ),
        )
    )
    return [row or "" for row in rows]
