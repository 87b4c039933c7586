"""Provider events: stored once each, then applied to their job, tracking row and suppressions.

A webhook only stores (:func:`store_events`), so it can answer at once; the apply task
(:func:`apply_pending`) matches each stored event to its job and moves the job's status
forward through :func:`email_worker.db.transitions.record_event`, which never moves it back.
An event whose job is not found yet (a webhook can beat the commit of the job or of
its ``sent`` record) stays unapplied and is tried again for :data:`MATCH_WINDOW`.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import uuid
from collections.abc import Collection, Iterable, Sequence

from sqlalchemy import select, text, tuple_, update
from sqlalchemy.orm import Session

from email_worker.db import status as st
from email_worker.db import transitions
from email_worker.db.dialect import insert
from email_worker.db.models import EmailEvent, EmailJob, EmailTracking, utcnow
from email_worker.db.sealing import lookup_hash, seal_json, seal_text
from email_worker.db.suppressions import add_suppression
from email_worker.tracking import events as ev

# Long enough for a job or its record of `sent` to be committed after a webhook came;
# events of untracked sends never match, and are not looked at again after this.
MATCH_WINDOW = dt.timedelta(hours=1)
BATCH = 500
STORE_CHUNK = 1000  # events per INSERT; a batch is read and stored this many at a time

_JOB_STATUS = {
    ev.DELIVERED: st.DELIVERED,
    ev.OPENED: st.OPENED,
    ev.CLICKED: st.CLICKED,
    ev.BOUNCED: st.BOUNCED,
    ev.DROPPED: st.BOUNCED,
    ev.REJECTED: st.BOUNCED,
}
_FAILURES = frozenset({ev.BOUNCED, ev.DROPPED, ev.REJECTED})
_SUPPRESSIONS = {
    ev.COMPLAINED: ("complaint", "marketing"),
    ev.UNSUBSCRIBED: ("unsubscribe", "marketing"),
}


# On PostgreSQL a chunk is one INSERT with one parameter, a JSON array of the rows: the
# statement stays short whatever the chunk's size, far from the 65,535 parameters one
# statement may carry.
_STORE_CHUNK_SQL = text(
    """
    INSERT INTO email_events (id, provider, provider_event_id, provider_message_id,
        event_type, bounce_type, recipient, recipient_hash, occurred_at, received_at,
        machine_open, payload)
    SELECT gen_random_uuid(), provider, provider_event_id, provider_message_id, event_type,
        bounce_type, recipient, recipient_hash, occurred_at, :received_at, machine_open, payload
    FROM jsonb_to_recordset(CAST(:events AS jsonb)) AS event(provider text,
        provider_event_id text, provider_message_id text, event_type text, bounce_type text,
        recipient text, recipient_hash text, occurred_at timestamp, machine_open boolean,
        payload text)
    ON CONFLICT (provider, provider_event_id) DO NOTHING
    RETURNING id
    """
)


def store_events(session: Session, events: Iterable[ev.DeliveryEvent]) -> list[uuid.UUID]:
    """Insert the events not stored before, a chunk at a time; returns the ids of the new rows.

    ``events`` is consumed as it is read, so a batch of any size takes the memory of one
    chunk; the chunks share the caller's transaction.
    """
    received_at = utcnow()
    on_postgresql = session.get_bind(clause=_STORE_CHUNK_SQL).dialect.name == "postgresql"
    stored: list[uuid.UUID] = []
    events = iter(events)
    while chunk := list(itertools.islice(events, STORE_CHUNK)):
        if on_postgresql:
            parameters = {"events": _as_json(chunk), "received_at": received_at}
            stored += session.scalars(_STORE_CHUNK_SQL, parameters)
        else:
            stored += _store_rows(session, chunk, received_at)
    return stored


def _as_json(chunk: Sequence[ev.DeliveryEvent]) -> str:
    """The chunk as the JSON array :data:`_STORE_CHUNK_SQL` reads."""
    return json.dumps(
        [
            {
                "provider": event.provider,
                "provider_event_id": event.provider_event_id,
                "provider_message_id": event.provider_message_id,
                "event_type": event.event_type,
                "bounce_type": event.bounce_type,
                # Sealed here: the statement is text, so the columns' types do not apply.
                "recipient": _sealed_recipient(event.recipient),
                "recipient_hash": _recipient_hash(event.recipient),
                "occurred_at": event.occurred_at.isoformat(),
                "machine_open": event.machine_open,
                "payload": None
                if event.payload is None
                else seal_json("email_events.payload", event.payload),
            }
            for event in chunk
        ]
    )


def _sealed_recipient(recipient: str | None) -> str | None:
    return None if recipient is None else seal_text("email_events.recipient", recipient)


def _recipient_hash(recipient: str | None) -> str | None:
    return None if recipient is None else lookup_hash(recipient)


def _store_rows(
    session: Session, chunk: Sequence[ev.DeliveryEvent], received_at: dt.datetime
) -> list[uuid.UUID]:
    """Insert a chunk one row at a time (on SQLite; jsonb_to_recordset is PostgreSQL's)."""
    stored: list[uuid.UUID] = []
    for event in chunk:
        statement = (
            insert(session, EmailEvent)
            .values(
                id=uuid.uuid4(),
                provider=event.provider,
                provider_event_id=event.provider_event_id,
                provider_message_id=event.provider_message_id,
                event_type=event.event_type,
                bounce_type=event.bounce_type,
                recipient=event.recipient,
                recipient_hash=_recipient_hash(event.recipient),
                occurred_at=event.occurred_at,
                received_at=received_at,
                machine_open=event.machine_open,
                payload=event.payload,
            )
            .on_conflict_do_nothing(index_elements=["provider", "provider_event_id"])
            .returning(EmailEvent.id)
        )
        stored += session.scalars(statement)
    return stored


def apply_pending(
    session: Session,
    event_ids: Collection[uuid.UUID] | None = None,
    *,
    after: tuple[dt.datetime, uuid.UUID] | None = None,
    limit: int = BATCH,
) -> tuple[int, int, tuple[dt.datetime, uuid.UUID] | None]:
    """Apply up to ``limit`` unapplied events; returns (taken, applied, key to go on after).

    Only ``event_ids`` when given; otherwise every unapplied event of the last
    :data:`MATCH_WINDOW`, oldest first, starting after ``after``. Rows are locked
    (SKIP LOCKED), so two apply tasks never apply one event twice.
    """
    statement = (
        select(EmailEvent)
        .where(EmailEvent.applied_at.is_(None), EmailEvent.received_at >= utcnow() - MATCH_WINDOW)
        .order_by(EmailEvent.received_at, EmailEvent.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if event_ids is not None:
        statement = statement.where(EmailEvent.id.in_(list(event_ids)))
    if after is not None:
        statement = statement.where(tuple_(EmailEvent.received_at, EmailEvent.id) > after)
    taken = list(session.scalars(statement))
    # In the order they happened, so the tracking row keeps the latest failure's reason.
    in_order = sorted(taken, key=lambda event: event.occurred_at)
    applied = sum(apply_event(session, event) for event in in_order)
    last = (taken[-1].received_at, taken[-1].id) if taken else None
    return len(taken), applied, last


def apply_event(session: Session, event: EmailEvent) -> bool:
    """Apply one stored event; False while its job cannot be found."""
    _suppress(session, event)
    job_id = event.job_id or match_job(session, event)
    if job_id is None:
        return False
    status = _JOB_STATUS.get(event.event_type)
    if status == st.OPENED and event.machine_open:
        status = None  # a mail client's prefetch, not a person: stored, but no "opened"
    if status is not None:
        transitions.record_event(session, job_id, status, event.occurred_at)
    if event.event_type in _FAILURES:
        _record_failure(session, job_id, event)
    event.job_id = job_id
    event.applied_at = utcnow()
    session.flush()
    return True


def events_of_job(session: Session, job_id: uuid.UUID) -> list[EmailEvent]:
    """The provider events stored for a job, in the order they happened."""
    statement = (
        select(EmailEvent)
        .where(EmailEvent.job_id == job_id)
        .order_by(EmailEvent.occurred_at, EmailEvent.received_at)
    )
    return list(session.scalars(statement))


def match_job(session: Session, event: EmailEvent) -> uuid.UUID | None:
    """The job an event is about: by our id when the email carried one, else by message id."""
    our_id = ev.our_id(event.provider, event.payload)
    if our_id is not None:
        # Authoritative: an id that names no job is an untracked send's (or not yet committed).
        return session.scalar(select(EmailJob.id).where(EmailJob.id == our_id))
    message_id = event.provider_message_id
    if message_id is None:
        return None
    # Every sent email has a tracking row with its message id (indexed there, not on the
    # job, whose every status change would then write one more index entry).
    return session.scalar(
        select(EmailTracking.job_id)
        .where(EmailTracking.message_id == message_id, EmailTracking.job_id.is_not(None))
        .limit(1)
    )


def _record_failure(session: Session, job_id: uuid.UUID, event: EmailEvent) -> None:
    """Keep why the message was not delivered on the job's latest sent tracking row."""
    reason = f"{event.event_type}"
    if event.bounce_type:
        reason += f" ({event.bounce_type})"
    detail = ev.reason_of(event.provider, event.payload)
    if detail:
        reason += f": {detail}"
    latest = transitions.latest_sent_tracking(job_id)
    session.execute(
        update(EmailTracking).where(EmailTracking.id == latest).values(error_message=reason)
    )


def _suppress(session: Session, event: EmailEvent) -> None:
    """Add the recipient of a hard bounce, complaint or unsubscribe to the suppression list."""
    if event.recipient is None:
        return
    if event.event_type == ev.BOUNCED and event.bounce_type == ev.HARD:
        reason, scope = "hard_bounce", "all"
    elif event.event_type in _SUPPRESSIONS:
        reason, scope = _SUPPRESSIONS[event.event_type]
    else:
        return
    add_suppression(session, event.recipient, reason, scope, event.provider, event.job_id)
