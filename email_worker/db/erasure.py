"""Erasing one person's data on request (GDPR art. 17), in every table that holds it.

A person is found by the lookup hash of their address (:func:`lookup_hash`), never by
the address itself: the address is stored only sealed. Every row that names them is
cleared of its personal columns (:func:`email_worker.db.personal_data.cleared`, the same
fields retention clears) and keeps what operators count: ids, kinds, statuses, times.
A job to them not sent yet is cancelled, so no worker ever sends it; a job being sent
right now is cleared too but counted apart, because its worker may still record the
result it got (run the erasure again once it has finished).

The suppression list either keeps their hash alone (``suppress=True``: no address, so
they are never mailed again but cannot be read back) or forgets them. The caller owns
the transaction: erase on the primary, in one transaction, so a failure erases nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from email_worker.addresses import InvalidAddress, normalize
from email_worker.db import bulk
from email_worker.db import status as st
from email_worker.db.dialect import insert, utc_now
from email_worker.db.models import (
    ApiRequest,
    EmailBulkRecipient,
    EmailEvent,
    EmailJob,
    EmailSuppression,
)
from email_worker.db.personal_data import cleared
from email_worker.db.sealing import lookup_hash
from email_worker.db.suppressions import SCOPE_ALL

ERASED = "erased on request"
REASON = "erasure"  # the suppression reason of an erased person's hash-only entry


def audit_target(address: str) -> str:
    """How the audit log names an erased person: a prefix of their lookup hash, not the address."""
    return f"address hash {lookup_hash(address)[:16]}"


@dataclass(frozen=True)
class Erasure:
    """How many rows of each table an erasure cleared, cancelled or deleted."""

    jobs: int  # email_jobs cleared
    jobs_cancelled: int  # ... of which not sent yet, now cancelled
    jobs_in_flight: int  # ... of which being sent right now: erase again once they finish
    api_requests: int  # idempotency records of those jobs, deleted
    events: int  # email_events cleared
    bulk_recipients: int  # email_bulk_recipients cleared
    bulk_recipients_cancelled: int  # ... of which not sent yet, now cancelled
    suppressions_kept: int  # 1: the hash-only entry that keeps them from being mailed
    suppressions_deleted: int  # 1: their entry, forgotten

    def counts(self) -> dict[str, int]:
        """The counts by name, as the command and the HTTP endpoint show them."""
        return asdict(self)


def checked_address(address: str) -> str:
    """``address`` if it is one an email could have been sent to; else a ValueError saying why.

    An erasure of a mistyped address would answer "nothing found" and be taken for done.
    """
    try:
        return normalize(address.strip())
    except InvalidAddress as exc:
        raise ValueError(f"not a valid email address: {exc}") from None


def erase_person(session: Session, address: str, *, suppress: bool) -> Erasure:
    """Clear every row that holds ``address``; keep its hash on the suppression list or not."""
    hashed = lookup_hash(checked_address(address))
    jobs = _matching_jobs(session, hashed)
    job_ids = [job_id for job_id, _ in jobs]
    cancelled = [job_id for job_id, status in jobs if status in st.NOT_SENT_YET]
    _clear_jobs(session, job_ids, cancelled)
    api_requests = _delete_api_requests(session, job_ids)
    events = _clear_events(session, hashed, job_ids)
    recipients, recipients_cancelled = _clear_bulk_recipients(session, hashed)
    kept, deleted = _suppression(session, hashed, suppress=suppress)
    session.flush()
    return Erasure(
        jobs=len(job_ids),
        jobs_cancelled=len(cancelled),
        jobs_in_flight=sum(1 for _, status in jobs if status == st.SENDING),
        api_requests=api_requests,
        events=events,
        bulk_recipients=recipients,
        bulk_recipients_cancelled=recipients_cancelled,
        suppressions_kept=kept,
        suppressions_deleted=deleted,
    )


def _matching_jobs(session: Session, hashed: str) -> list[tuple[uuid.UUID, str]]:
    """The id and status of every job the person is a recipient of (to, cc or bcc), locked.

    The lock keeps a worker from claiming a job between this read and its cancellation.
    """
    rows = session.execute(
        select(EmailJob.id, EmailJob.status)
        .where(
            or_(
                EmailJob.recipient_hash == hashed,
                EmailJob.recipient_hashes.contains(hashed, autoescape=True),
            )
        )
        .with_for_update()
    )
    return [(job_id, status) for job_id, status in rows]


def _clear_jobs(
    session: Session, job_ids: Sequence[uuid.UUID], cancelled: Sequence[uuid.UUID]
) -> None:
    """Clear the jobs' personal fields; cancel those not sent yet, so none is ever sent."""
    if not job_ids:
        return
    values: dict[str, Any] = {
        **cleared("email_jobs"),
        "personal_data_cleared_at": utc_now(),
        "updated_at": utc_now(),
    }
    session.execute(update(EmailJob).where(EmailJob.id.in_(job_ids)).values(values))
    if cancelled:
        session.execute(
            update(EmailJob)
            .where(EmailJob.id.in_(cancelled), EmailJob.status.in_(st.NOT_SENT_YET))
            .values(status=st.CANCELLED, last_error=ERASED, lease_expires_at=None)
        )


def _delete_api_requests(session: Session, job_ids: Sequence[uuid.UUID]) -> int:
    """Delete the idempotency records that lead to the jobs."""
    if not job_ids:
        return 0
    result = session.execute(delete(ApiRequest).where(ApiRequest.job_id.in_(job_ids)))
    return _rowcount(result)


def _clear_events(session: Session, hashed: str, job_ids: Sequence[uuid.UUID]) -> int:
    """Clear the provider events about the person or about one of their jobs."""
    about = EmailEvent.recipient_hash == hashed
    if job_ids:
        about = or_(about, EmailEvent.job_id.in_(job_ids))
    result = session.execute(update(EmailEvent).where(about).values(cleared("email_events")))
    return _rowcount(result)


def _clear_bulk_recipients(session: Session, hashed: str) -> tuple[int, int]:
    """Cancel the person's bulk recipients not sent yet, then clear all of theirs."""
    mine = EmailBulkRecipient.address_hash == hashed
    cancelled = session.execute(
        update(EmailBulkRecipient)
        .where(mine, EmailBulkRecipient.status.in_((bulk.PENDING, bulk.RETRYING)))
        .values(status=bulk.CANCELLED, error=ERASED, lease_expires_at=None, updated_at=utc_now())
    )
    result = session.execute(
        update(EmailBulkRecipient)
        .where(mine)
        .values({**cleared("email_bulk_recipients"), "updated_at": utc_now()})
    )
    return _rowcount(result), _rowcount(cancelled)


def _suppression(session: Session, hashed: str, *, suppress: bool) -> tuple[int, int]:
    """Keep the person's hash alone on the list (scope all), or take them off it."""
    if not suppress:
        result = session.execute(
            delete(EmailSuppression).where(EmailSuppression.address_hash == hashed)
        )
        return 0, _rowcount(result)
    statement = insert(session, EmailSuppression).values(
        address_hash=hashed, address=None, reason=REASON, scope=SCOPE_ALL, source=REASON
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[EmailSuppression.address_hash],
            set_={"address": None, "reason": REASON, "scope": SCOPE_ALL, "source": REASON},
        )
    )
    return 1, 0


def _rowcount(result: Any) -> int:
    return int(result.rowcount)
