"""Bulk sends: create them, claim and record their recipients, count and cancel them.

A bulk send is one ``email_bulks`` row and one ``email_bulk_recipients`` row per
recipient, keyed by its position in the producer's list. Recipients move
``pending`` -> ``sending`` -> ``sent`` | ``refused`` | ``failed``, or back to
``retrying`` after a transient failure; ``pending`` and ``retrying`` ones may be
``cancelled``. Each move is one conditional UPDATE whose WHERE clause is its guard.

``lease_expires_at`` has two meanings: while a recipient is ``sending`` it is when the
claim runs out (a lost worker's recipients are claimed again after it, and it fences
the record of the claim's outcome); while ``retrying`` it is when the recipient is due
again. Times are the database's clock, as in :mod:`email_worker.db.job_table`. The caller
owns the transaction: these functions flush but do not commit.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Row, Table, and_, bindparam, exists, func, or_, select, update
from sqlalchemy.orm import Session

from email_worker.db.dialect import insert, plus_seconds, utc_now
from email_worker.db.models import EmailBulk, EmailBulkRecipient, utcnow
from email_worker.db.sealing import lookup_hash
from email_worker.db.send_path import CLAIM_SLACK

_BULKS = cast(Table, EmailBulk.__table__)
_RECIPIENTS = cast(Table, EmailBulkRecipient.__table__)

# Bulk statuses.
BULK_PENDING = "pending"  # stored; its batches are not all published yet
BULK_SENDING = "sending"
BULK_COMPLETED = "completed"  # no recipient is pending, sending or retrying
BULK_CANCELLED = "cancelled"

# Recipient statuses.
PENDING = "pending"
SENDING = "sending"
RETRYING = "retrying"
SENT = "sent"
REFUSED = "refused"  # the provider took the message but refused this address for good
FAILED = "failed"
CANCELLED = "cancelled"
RECIPIENT_STATUSES = (PENDING, SENDING, SENT, REFUSED, FAILED, RETRYING, CANCELLED)
ACTIVE = (PENDING, SENDING, RETRYING)
OUTCOMES = frozenset({SENT, REFUSED, FAILED, RETRYING})

# Rows per INSERT: a multi-row statement each, well under PostgreSQL's 65,535 parameters.
INSERT_CHUNK = 2000


@dataclass(frozen=True)
class RecipientResult:
    """What happened to one claimed recipient; ``retry_in`` seconds when ``retrying``."""

    position: int
    status: str
    provider: str | None = None
    provider_message_id: str | None = None
    error: str | None = None
    retry_in: float | None = None
    counted: bool = True  # False: no provider was asked (a rate limit wait), not an attempt


def create_bulk(
    session: Session,
    *,
    bulk_id: uuid.UUID,
    template_id: str,
    kind: str,
    payload: dict[str, Any],
    provider: str | None,
    recipients: Sequence[tuple[str, dict[str, Any]]],
) -> bool:
    """Store a bulk and its recipients (address, data) in order; False if it was stored before.

    The bulk row and its recipients go in with the caller's one transaction, so a
    bulk found stored has all its recipients: a redelivered message inserts nothing.
    """
    now = utc_now()
    statement = (
        insert(session, _BULKS)
        .values(
            id=bulk_id,
            template_id=template_id,
            kind=kind,
            payload=payload,
            status=BULK_PENDING,
            provider=provider,
            total=len(recipients),
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing()
        .returning(_BULKS.c.id)
    )
    if session.execute(statement).scalar_one_or_none() is None:
        return False
    moment = utcnow()
    for start in range(0, len(recipients), INSERT_CHUNK):
        rows = [
            {
                "bulk_id": bulk_id,
                "position": position,
                "address": address,
                "address_hash": lookup_hash(address),
                "data": data,
                "status": PENDING,
                "attempts": 0,
                "updated_at": moment,
            }
            for position, (address, data) in enumerate(
                recipients[start : start + INSERT_CHUNK], start
            )
        ]
        session.execute(_RECIPIENTS.insert(), rows)
    return True


def mark_bulk_sending(session: Session, bulk_id: uuid.UUID) -> bool:
    """Note that every batch of a pending bulk was published."""
    statement = (
        update(_BULKS)
        .where(_BULKS.c.id == bulk_id, _BULKS.c.status == BULK_PENDING)
        .values(status=BULK_SENDING, updated_at=utc_now())
    )
    return bool(_rowcount(session.execute(statement)))


def claim_recipients(
    session: Session,
    bulk_id: uuid.UUID,
    first: int,
    last: int,
    *,
    lease_seconds: float,
) -> list[Row[Any]]:
    """Move the due recipients at positions ``first`` to ``last - 1`` to ``sending``.

    Due: pending, retrying whose wait is over, or sending under a lease that ran out
    (its worker was lost). Nothing is claimed from a cancelled bulk. Each claimed row
    counts an attempt; the rows returned carry the lease their outcome must name.
    """
    r = _RECIPIENTS.c
    due = or_(
        r.status == PENDING,
        and_(
            r.status == RETRYING,
            or_(r.lease_expires_at.is_(None), r.lease_expires_at <= utc_now(CLAIM_SLACK.seconds)),
        ),
        and_(r.status == SENDING, r.lease_expires_at < utc_now()),
    )
    live = exists().where(_BULKS.c.id == bulk_id, _BULKS.c.status != BULK_CANCELLED)
    statement = (
        update(_RECIPIENTS)
        .where(r.bulk_id == bulk_id, r.position >= first, r.position < last, due, live)
        .values(
            status=SENDING,
            attempts=r.attempts + 1,
            lease_expires_at=utc_now(lease_seconds),
            updated_at=utc_now(),
        )
        .returning(r.position, r.address, r.data, r.attempts, r.lease_expires_at)
    )
    return sorted(session.execute(statement).all(), key=lambda row: row.position)


def record_results(
    session: Session, bulk_id: uuid.UUID, lease: dt.datetime, results: Iterable[RecipientResult]
) -> None:
    """Record the outcome of each claimed recipient: one statement for the whole batch.

    Only rows still held by the claim whose lease is ``lease`` change: a recipient
    claimed again since (its lease ran out) belongs to the new claim.
    """
    r = _RECIPIENTS.c
    rows = []
    for result in results:
        if result.status not in OUTCOMES:
            raise ValueError(f"not an outcome of a send: {result.status!r}")
        rows.append(
            {
                "b_position": result.position,
                "b_status": result.status,
                "b_provider": result.provider,
                "b_message_id": result.provider_message_id,
                "b_error": result.error,
                "b_retry_in": result.retry_in if result.status == RETRYING else None,
                "b_uncounted": 0 if result.counted else 1,
            }
        )
    if not rows:
        return
    statement = (
        update(_RECIPIENTS)
        .where(
            r.bulk_id == bulk_id,
            r.position == bindparam("b_position"),
            r.status == SENDING,
            r.lease_expires_at == lease,
        )
        .values(
            status=bindparam("b_status"),
            provider=bindparam("b_provider"),
            provider_message_id=bindparam("b_message_id"),
            error=bindparam("b_error"),
            attempts=r.attempts - bindparam("b_uncounted"),
            lease_expires_at=plus_seconds(utc_now(), bindparam("b_retry_in")),
            updated_at=utc_now(),
        )
    )
    session.connection().execute(statement, rows)


def release_recipients(
    session: Session, bulk_id: uuid.UUID, lease: dt.datetime, positions: Sequence[int]
) -> None:
    """Give back claimed recipients that were not tried (time ran out): not an attempt."""
    if not positions:
        return
    r = _RECIPIENTS.c
    session.execute(
        update(_RECIPIENTS)
        .where(
            r.bulk_id == bulk_id,
            r.position.in_(positions),
            r.status == SENDING,
            r.lease_expires_at == lease,
        )
        .values(
            status=RETRYING, attempts=r.attempts - 1, lease_expires_at=None, updated_at=utc_now()
        )
    )


def next_due_in(session: Session, bulk_id: uuid.UUID, first: int, last: int) -> float | None:
    """Seconds until a recipient in the range is due (a retry, a lease); None if none waits."""
    r = _RECIPIENTS.c
    active, waiting, due, now = session.execute(
        select(
            func.count(), func.count(r.lease_expires_at), func.min(r.lease_expires_at), utc_now()
        ).where(r.bulk_id == bulk_id, r.position >= first, r.position < last, r.status.in_(ACTIVE))
    ).one()
    if not active:
        return None
    if waiting < active:
        return 0.0  # a pending recipient, or one given back: due now
    return max((due - now).total_seconds(), 0.0)


def complete_if_done(session: Session, bulk_id: uuid.UUID) -> bool:
    """Mark the bulk ``completed`` once none of its recipients is pending, sending or retrying."""
    r = _RECIPIENTS.c
    active = exists().where(r.bulk_id == bulk_id, r.status.in_(ACTIVE))
    statement = (
        update(_BULKS)
        .where(_BULKS.c.id == bulk_id, _BULKS.c.status.in_((BULK_PENDING, BULK_SENDING)), ~active)
        .values(status=BULK_COMPLETED, updated_at=utc_now())
    )
    return bool(_rowcount(session.execute(statement)))


def cancel_bulk(session: Session, bulk_id: uuid.UUID) -> int | None:
    """Cancel a bulk and its recipients not yet sent; how many were cancelled (None: no bulk).

    Recipients being sent right now are not stopped; none claimed later is sent.
    """
    found = session.execute(
        update(_BULKS)
        .where(_BULKS.c.id == bulk_id)
        .values(
            status=BULK_CANCELLED,
            cancelled_at=func.coalesce(_BULKS.c.cancelled_at, utc_now()),
            updated_at=utc_now(),
        )
        .returning(_BULKS.c.id)
    ).scalar_one_or_none()
    if found is None:
        return None
    r = _RECIPIENTS.c
    cancelled = session.execute(
        update(_RECIPIENTS)
        .where(r.bulk_id == bulk_id, r.status.in_((PENDING, RETRYING)))
        .values(status=CANCELLED, lease_expires_at=None, updated_at=utc_now())
    )
    return _rowcount(cancelled)


def get_bulk(session: Session, bulk_id: uuid.UUID) -> EmailBulk | None:
    """The bulk row, or None."""
    return session.get(EmailBulk, bulk_id)


def status_counts(session: Session, bulk_id: uuid.UUID) -> dict[str, int]:
    """How many recipients of the bulk are in each status (every status, zeros included)."""
    r = _RECIPIENTS.c
    counted = session.execute(
        select(r.status, func.count()).where(r.bulk_id == bulk_id).group_by(r.status)
    )
    counts = dict.fromkeys(RECIPIENT_STATUSES, 0)
    counts.update({status: int(n) for status, n in counted})
    return counts


def _rowcount(result: Any) -> int:
    return int(result.rowcount)
