"""Bulk sends in the database: stored once, claimed under a lease, recorded, counted, cancelled."""

from __future__ import annotations

import time
import uuid

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from email_worker.db import bulk
from email_worker.db.models import EmailBulk, EmailBulkRecipient

RECIPIENTS = [(f"user{i}@example.com", {"name": f"User {i}"}) for i in range(5)]


def create(
    session: Session, recipients: list[tuple[str, dict[str, str]]] = RECIPIENTS
) -> uuid.UUID:
    bulk_id = uuid.uuid4()
    assert store(session, bulk_id, recipients) is True
    return bulk_id


def store(
    session: Session, bulk_id: uuid.UUID, recipients: list[tuple[str, dict[str, str]]]
) -> bool:
    created = bulk.create_bulk(
        session,
        bulk_id=bulk_id,
        template_id="generic_notice",
        kind="newsletter",
        payload={"template_id": "generic_notice", "kind": "newsletter", "priority": "low"},
        provider=None,
        recipients=recipients,
    )
    session.commit()
    return created


def test_a_bulk_is_stored_once_with_its_recipients_in_order(session: Session) -> None:
    bulk_id = create(session)
    assert store(session, bulk_id, RECIPIENTS[:2]) is False  # a redelivered message
    stored = session.get(EmailBulk, bulk_id)
    assert stored is not None and stored.total == 5 and stored.status == bulk.BULK_PENDING
    rows = session.scalars(
        select(EmailBulkRecipient)
        .where(EmailBulkRecipient.bulk_id == bulk_id)
        .order_by(EmailBulkRecipient.position)
    ).all()
    assert [(r.position, r.address, r.data) for r in rows] == [
        (i, address, data) for i, (address, data) in enumerate(RECIPIENTS)
    ]
    assert {r.status for r in rows} == {"pending"}


def test_many_recipients_go_in_by_chunks(session: Session) -> None:
    many = [(f"u{i}@example.com", {"n": str(i)}) for i in range(bulk.INSERT_CHUNK * 2 + 7)]
    bulk_id = create(session, many)
    assert bulk.status_counts(session, bulk_id)["pending"] == len(many)


def test_a_claim_takes_its_range_once_until_the_lease_runs_out(session: Session) -> None:
    bulk_id = create(session)
    claimed = bulk.claim_recipients(session, bulk_id, 1, 4, lease_seconds=0.2)
    session.commit()
    assert [(r.position, r.address, r.attempts) for r in claimed] == [
        (1, "user1@example.com", 1),
        (2, "user2@example.com", 1),
        (3, "user3@example.com", 1),
    ]
    assert bulk.claim_recipients(session, bulk_id, 0, 5, lease_seconds=60) != []  # 0 and 4
    session.commit()
    assert bulk.claim_recipients(session, bulk_id, 0, 5, lease_seconds=60) == []
    time.sleep(0.4)  # the first claim's worker was lost: its lease runs out
    again = bulk.claim_recipients(session, bulk_id, 0, 5, lease_seconds=60)
    assert [(r.position, r.attempts) for r in again] == [(1, 2), (2, 2), (3, 2)]


def test_results_are_recorded_for_the_claim_that_holds_them(session: Session) -> None:
    bulk_id = create(session)
    claimed = bulk.claim_recipients(session, bulk_id, 0, 5, lease_seconds=60)
    lease = claimed[0].lease_expires_at
    bulk.record_results(
        session,
        bulk_id,
        lease,
        [
            bulk.RecipientResult(0, bulk.SENT, "smtp", "<a@x>"),
            bulk.RecipientResult(1, bulk.FAILED, "smtp", error="550 no such user"),
            bulk.RecipientResult(2, bulk.RETRYING, "smtp", error="451 later", retry_in=30),
            bulk.RecipientResult(3, bulk.REFUSED, "smtp", error="rejected"),
        ],
    )
    bulk.release_recipients(session, bulk_id, lease, [4])
    session.commit()
    assert bulk.status_counts(session, bulk_id) == {
        "pending": 0,
        "sending": 0,
        "sent": 1,
        "refused": 1,
        "failed": 1,
        "retrying": 2,
        "cancelled": 0,
    }
    sent = session.get(EmailBulkRecipient, (bulk_id, 0), populate_existing=True)
    assert sent is not None and (sent.provider, sent.provider_message_id) == ("smtp", "<a@x>")
    # Position 4 was given back untried (due now, its attempt not counted); 2 waits 30 s.
    again = bulk.claim_recipients(session, bulk_id, 0, 5, lease_seconds=60)
    assert [(r.position, r.attempts) for r in again] == [(4, 1)]
    bulk.record_results(
        session, bulk_id, lease, [bulk.RecipientResult(4, bulk.SENT, "smtp", "<stale@x>")]
    )  # a stale claim's record changes nothing
    session.commit()
    waiting = bulk.next_due_in(session, bulk_id, 0, 5)
    assert waiting is not None and 20 < waiting <= 30
    assert bulk.status_counts(session, bulk_id)["sending"] == 1
    assert bulk.complete_if_done(session, bulk_id) is False


def test_a_bulk_is_completed_once_nothing_waits(session: Session) -> None:
    bulk_id = create(session, RECIPIENTS[:2])
    assert bulk.mark_bulk_sending(session, bulk_id) is True
    claimed = bulk.claim_recipients(session, bulk_id, 0, 2, lease_seconds=60)
    assert bulk.next_due_in(session, bulk_id, 0, 2) is not None
    bulk.record_results(
        session,
        bulk_id,
        claimed[0].lease_expires_at,
        [bulk.RecipientResult(0, bulk.SENT), bulk.RecipientResult(1, bulk.FAILED, error="x")],
    )
    assert bulk.next_due_in(session, bulk_id, 0, 2) is None
    assert bulk.complete_if_done(session, bulk_id) is True
    session.commit()
    stored = session.get(EmailBulk, bulk_id, populate_existing=True)
    assert stored is not None and stored.status == bulk.BULK_COMPLETED


def test_cancel_stops_every_recipient_not_yet_sent(session: Session) -> None:
    bulk_id = create(session)
    claimed = bulk.claim_recipients(session, bulk_id, 0, 2, lease_seconds=0.1)
    bulk.record_results(
        session, bulk_id, claimed[0].lease_expires_at, [bulk.RecipientResult(0, bulk.SENT)]
    )
    session.commit()
    assert bulk.cancel_bulk(session, bulk_id) == 3  # 2, 3 and 4; 1 is being sent
    session.commit()
    time.sleep(0.3)  # position 1's lease runs out: a cancelled bulk is not claimed again
    assert bulk.claim_recipients(session, bulk_id, 0, 5, lease_seconds=60) == []
    counts = bulk.status_counts(session, bulk_id)
    assert (counts["sent"], counts["sending"], counts["cancelled"]) == (1, 1, 3)
    stored = session.get(EmailBulk, bulk_id, populate_existing=True)
    assert stored is not None and stored.status == "cancelled" and stored.cancelled_at
    assert bulk.cancel_bulk(session, uuid.uuid4()) is None


def test_an_unknown_outcome_is_refused(session: Session) -> None:
    bulk_id = create(session)
    with pytest.raises(ValueError, match="not an outcome"):
        bulk.record_results(session, bulk_id, None, [bulk.RecipientResult(0, "delivered")])  # type: ignore[arg-type]
