"""Provider events in the database: a batch of any size is stored once per event id."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from email_worker.db.events import STORE_CHUNK, store_events
from email_worker.db.models import EmailEvent
from email_worker.tracking import events as ev

AT = dt.datetime(2026, 11, 28, 10, 0, 0)
# One INSERT of 12 parameters per event could hold no more than 5,461 of these.
MANY = 6_000


def delivered(number: int) -> ev.DeliveryEvent:
    return ev.DeliveryEvent(
        provider=ev.SENDGRID,
        provider_event_id=f"evt-{number}",
        event_type=ev.DELIVERED,
        occurred_at=AT + dt.timedelta(seconds=number),
        recipient=f"user{number}@example.com",
        provider_message_id=f"msg-{number}",
        payload={"event": "delivered", "sg_event_id": f"evt-{number}", "n": number},
    )


def stored_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(EmailEvent)) or 0


def test_a_batch_larger_than_one_insert_could_carry_is_stored_once(session: Session) -> None:
    # A generator: the batch is read as it is stored, never held whole.
    assert len(store_events(session, (delivered(n) for n in range(MANY)))) == MANY
    session.commit()
    assert stored_count(session) == MANY
    again = [delivered(n) for n in range(MANY - 10, MANY + 5)]  # ten stored, five new
    assert len(store_events(session, again)) == 5
    session.commit()
    assert stored_count(session) == MANY + 5


def test_a_stored_event_keeps_every_field_and_its_payload(session: Session) -> None:
    bounce = ev.DeliveryEvent(
        provider=ev.SES,
        provider_event_id="sns-1#0",
        event_type=ev.BOUNCED,
        occurred_at=AT,
        recipient="ann@example.com",
        provider_message_id="0100-ses-1",
        bounce_type=ev.HARD,
        payload={"bounce": {"bounceType": "Permanent"}, "text": "Grüße ✓", "list": [1, None]},
    )
    opened = ev.DeliveryEvent(
        provider=ev.SENDGRID,
        provider_event_id="o-1",
        event_type=ev.OPENED,
        occurred_at=AT,
        machine_open=True,
        payload={"event": "open"},
    )
    (bounce_id, opened_id) = store_events(session, [bounce, opened])
    session.commit()
    row = session.get(EmailEvent, bounce_id)
    assert row is not None
    assert (row.provider, row.provider_event_id, row.event_type, row.bounce_type) == (
        "ses",
        "sns-1#0",
        "bounced",
        "hard",
    )
    assert (row.recipient, row.provider_message_id, row.occurred_at) == (
        "ann@example.com",
        "0100-ses-1",
        AT,
    )
    assert row.payload == bounce.payload and row.machine_open is False
    assert row.job_id is None and row.applied_at is None and row.received_at is not None
    machine = session.get(EmailEvent, opened_id)
    assert machine is not None and machine.machine_open is True and machine.recipient is None


def test_the_same_event_twice_in_one_chunk_is_stored_once(session: Session) -> None:
    batch = [delivered(1), delivered(2), delivered(1)]
    assert len(store_events(session, batch)) == 2
    across = [delivered(n % STORE_CHUNK) for n in range(STORE_CHUNK + 3)]  # 0-2 come back
    assert len(store_events(session, across)) == STORE_CHUNK - 2
    session.commit()
    assert stored_count(session) == STORE_CHUNK
