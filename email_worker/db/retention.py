"""Retention of personal data: clear it once a row is finished and the retention time has passed.

Rows are kept until ``JOB_RETENTION`` deletes them (operators count them, webhooks match
them), but what a person could be recognised by goes earlier, after
``PERSONAL_DATA_RETENTION``: the columns :data:`email_worker.db.personal_data.CLEARED`
names are set to NULL. Only rows nothing will read again are touched: finished jobs,
final bulk recipients, completed or cancelled bulks, events that were applied or
that can no longer be matched. The idempotency records of the HTTP API tie a key a
producer chose to a person's request; they are deleted.

Each batch is one statement over at most ``batch_size`` rows taken with ``FOR UPDATE
SKIP LOCKED`` (a second beat, or a worker recording an outcome, is never waited for:
its rows are left for the next run) and is committed on its own, so a large backlog
holds no lock for long and builds no huge transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import Table, delete, or_, select, tuple_, update
from sqlalchemy.orm import Session

from email_worker.db import bulk
from email_worker.db import status as st
from email_worker.db.dialect import utc_now
from email_worker.db.events import MATCH_WINDOW
from email_worker.db.models import ApiRequest, EmailBulk, EmailBulkRecipient, EmailEvent, EmailJob
from email_worker.db.personal_data import CLEARED, cleared

# Rows per statement: short locks, and few round trips for a day's backlog.
BATCH_SIZE = 500

_JOBS = cast(Table, EmailJob.__table__)
_EVENTS = cast(Table, EmailEvent.__table__)
_BULKS = cast(Table, EmailBulk.__table__)
_RECIPIENTS = cast(Table, EmailBulkRecipient.__table__)
_API_REQUESTS = cast(Table, ApiRequest.__table__)

# A bulk recipient in one of these has been dealt with for good.
RECIPIENT_FINAL = (bulk.SENT, bulk.REFUSED, bulk.FAILED, bulk.CANCELLED)
BULK_FINAL = (bulk.BULK_COMPLETED, bulk.BULK_CANCELLED)


def clear_personal_data(
    session: Session, older_than: dt.datetime, *, batch_size: int = BATCH_SIZE
) -> dict[str, int]:
    """Clear the personal fields of every finished row last changed before ``older_than``.

    Commits after each batch. Returns how many rows of each table were cleared (for
    ``api_requests``: deleted).
    """
    return {
        "email_jobs": _in_batches(session, batch_size, lambda n: _clear_jobs(older_than, n)),
        "email_events": _in_batches(session, batch_size, lambda n: _clear_events(older_than, n)),
        "email_bulk_recipients": _in_batches(
            session, batch_size, lambda n: _clear_recipients(older_than, n)
        ),
        "email_bulks": _in_batches(session, batch_size, lambda n: _clear_bulks(older_than, n)),
        "api_requests": _in_batches(
            session, batch_size, lambda n: _delete_api_requests(older_than, n)
        ),
    }


def _in_batches(session: Session, batch_size: int, statement: Callable[[int], Any]) -> int:
    """Run ``statement(batch_size)`` until a batch touches fewer rows; the total touched."""
    if batch_size < 1:
        raise ValueError(f"batch_size: must be at least 1, got {batch_size!r}")
    total = 0
    while True:
        done = len(session.execute(statement(batch_size)).all())
        session.commit()
        total += done
        if done < batch_size:
            return total


def _not_cleared(table: Table) -> Any:
    """The condition that a row still holds one of its personal columns."""
    return or_(*(table.c[name].is_not(None) for name in CLEARED[table.name]))


def _locked(table: Table, keys: tuple[str, ...], limit: int, *conditions: Any) -> Any:
    """The keys of up to ``limit`` rows matching ``conditions`` that nobody else holds."""
    columns = [table.c[name] for name in keys]
    return (
        select(*columns)
        .where(*conditions)
        .order_by(*columns)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )


def _clear(table: Table, keys: tuple[str, ...], limit: int, *conditions: Any, **extra: Any) -> Any:
    """One batch's UPDATE: clear the personal columns of the rows :func:`_locked` takes."""
    chosen = tuple_(*(table.c[name] for name in keys)).in_(_locked(table, keys, limit, *conditions))
    return (
        update(table)
        .where(chosen)
        .values(**cleared(table.name), **extra)
        .returning(*(table.c[name] for name in keys))
    )


def _clear_jobs(older_than: dt.datetime, limit: int) -> Any:
    """Finished jobs: events may still move a sent job forward, but only its status."""
    c = _JOBS.c
    return _clear(
        _JOBS,
        ("id",),
        limit,
        c.status.in_(st.FINISHED),
        c.updated_at < older_than,
        c.personal_data_cleared_at.is_(None),
        personal_data_cleared_at=utc_now(),
    )


def _clear_events(older_than: dt.datetime, limit: int) -> Any:
    """Applied events, and unapplied ones past the window in which they could still match."""
    c = _EVENTS.c
    done = or_(
        (c.applied_at.is_not(None)) & (c.received_at < older_than),
        (c.applied_at.is_(None)) & (c.received_at < older_than - MATCH_WINDOW),
    )
    return _clear(_EVENTS, ("id",), limit, done, _not_cleared(_EVENTS))


def _clear_recipients(older_than: dt.datetime, limit: int) -> Any:
    """Bulk recipients sent, refused, failed or cancelled: no worker reads them again."""
    c = _RECIPIENTS.c
    return _clear(
        _RECIPIENTS,
        ("bulk_id", "position"),
        limit,
        c.status.in_(RECIPIENT_FINAL),
        c.updated_at < older_than,
        _not_cleared(_RECIPIENTS),
    )


def _clear_bulks(older_than: dt.datetime, limit: int) -> Any:
    """Completed or cancelled bulks: their shared fields are needed by no batch any more."""
    c = _BULKS.c
    return _clear(
        _BULKS,
        ("id",),
        limit,
        c.status.in_(BULK_FINAL),
        c.updated_at < older_than,
        _not_cleared(_BULKS),
    )


def _delete_api_requests(older_than: dt.datetime, limit: int) -> Any:
    """Idempotency records: a key sent again after this starts a new job."""
    keys = ("api_key_id", "idempotency_key")
    columns = [_API_REQUESTS.c[name] for name in keys]
    chosen = tuple_(*columns).in_(
        _locked(_API_REQUESTS, keys, limit, _API_REQUESTS.c.created_at < older_than)
    )
    return delete(_API_REQUESTS).where(chosen).returning(*columns)
