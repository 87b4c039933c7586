"""The job lifecycle: each transition, its guard, and what it records."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from email_worker.db import housekeeping, job_queries, new_jobs, send_path, transitions
from email_worker.db import status as st
from email_worker.db.models import EmailJob, EmailTracking, utcnow
from email_worker.db.session import RoutingSession

PAYLOAD = {"to": "ada@example.com", "template_id": "welcome_email", "data": {"name": "Ada"}}


def create(session: Session, *, new: bool = True, **overrides: Any) -> EmailJob:
    arguments: dict[str, Any] = {
        "job_type": "welcome_email",
        "recipient_email": "ada@example.com",
        "payload": PAYLOAD,
    }
    arguments.update(overrides)
    job, created = new_jobs.create_job(session, **arguments)
    session.commit()
    assert created is new
    return job


def claim(session: Session, job: EmailJob) -> uuid.UUID:
    """Claim ``job`` and return the claim's token."""
    claimed = send_path.claim_job(session, job.id, lease_seconds=60)
    assert claimed is not None and claimed.claim_token is not None
    return claimed.claim_token


def status_of(session: Session, job_id: uuid.UUID) -> str:
    session.expire_all()
    return session.scalars(select(EmailJob.status).where(EmailJob.id == job_id)).one()


def test_a_new_job_keeps_the_whole_request(session: Session) -> None:
    job = create(
        session,
        subject="Welcome",
        template_id="welcome_email",
        template_data={"name": "Ada"},
        priority=5,
        max_retries=2,
    )
    found = job_queries.get_job(session, job.id)
    assert found is not None
    assert (found.status, found.retry_count, found.max_retries, found.priority) == (
        st.PENDING,
        0,
        2,
        5,
    )
    assert found.payload == PAYLOAD
    assert found.template_data == {"name": "Ada"}
    assert found.created_at is not None and found.tracking == []


def test_the_same_idempotency_key_returns_the_same_job(session: Session) -> None:
    first = create(session, idempotency_key="signup-42")
    second = create(
        session, idempotency_key="signup-42", recipient_email="other@example.com", new=False
    )
    assert second.id == first.id
    assert second.recipient_email == "ada@example.com"
    assert session.scalar(select(func.count()).select_from(EmailJob)) == 1


def test_a_new_job_is_pending_or_scheduled(session: Session) -> None:
    with pytest.raises(ValueError, match="pending or scheduled"):
        new_jobs.create_job(
            session, job_type="x", recipient_email="a@example.com", payload={}, status=st.SENT
        )
    with pytest.raises(ValueError, match="scheduled_at"):
        new_jobs.create_job(
            session, job_type="x", recipient_email="a@example.com", payload={}, status=st.SCHEDULED
        )


def test_a_job_is_claimed_once(session: Session) -> None:
    job = create(session)
    claimed = send_path.claim_job(session, job.id, lease_seconds=60)
    session.commit()
    assert claimed is not None and claimed.status == st.SENDING
    assert claimed.lease_expires_at is not None and claimed.lease_expires_at > utcnow()
    assert send_path.claim_job(session, job.id, lease_seconds=60) is None


def test_a_scheduled_job_is_not_claimed_before_it_is_dispatched(session: Session) -> None:
    job = create(session, status=st.SCHEDULED, scheduled_at=utcnow() - dt.timedelta(minutes=1))
    assert send_path.claim_job(session, job.id, lease_seconds=60) is None
    assert housekeeping.dispatch_due_jobs(session, utcnow(), limit=10) == [job.id]
    assert send_path.claim_job(session, job.id, lease_seconds=60) is not None


def test_a_sent_job_records_the_provider_and_a_tracking_row(session: Session) -> None:
    job = create(session)
    token = claim(session, job)
    assert send_path.mark_sent(
        session, job.id, claim_token=token, provider="smtp", provider_message_id="<m1@x>"
    )
    session.commit()
    found = job_queries.get_job(session, job.id)
    assert found is not None
    assert (found.status, found.provider, found.provider_message_id) == (st.SENT, "smtp", "<m1@x>")
    assert found.lease_expires_at is None and found.sent_at is not None
    assert found.claim_token is None
    [row] = found.tracking
    assert (row.status, row.provider, row.message_id) == (st.SENT, "smtp", "<m1@x>")
    assert row.sent_at == found.sent_at


@pytest.fixture
def pg_session(new_session: Callable[..., RoutingSession]) -> Session:
    return new_session(primary=True)


def test_a_batch_of_sent_records_moves_each_job_as_one_record_would(pg_session: Session) -> None:
    session = pg_session
    ours = [create(session) for _ in range(3)]
    tokens = [claim(session, job) for job in ours]
    taken_over = create(session)
    claim(session, taken_over)  # held by another claim: its record must not move it
    delivered = create(session)
    delivered_token = claim(session, delivered)
    assert transitions.record_event(session, delivered.id, st.DELIVERED, utcnow())
    session.commit()
    missing = uuid.uuid4()  # deleted since: no tracking row may point at it
    at = utcnow().replace(microsecond=0)
    records = [
        send_path.SentRecord(job.id, token, "smtp", f"<m{i}@x>", {"accepted": 1, "refused": {}}, at)
        for i, (job, token) in enumerate(zip(ours, tokens, strict=True))
    ]
    records += [
        send_path.SentRecord(taken_over.id, uuid.uuid4(), "smtp", "<late@x>", None, at),
        send_path.SentRecord(delivered.id, delivered_token, "ses", "m-d", None, at),
        send_path.SentRecord(missing, uuid.uuid4(), "smtp", "<gone@x>", None, at),
    ]

    assert send_path.mark_sent_batch(session, records) == 3
    session.commit()

    for i, job in enumerate(ours):
        found = job_queries.get_job(session, job.id)
        assert found is not None
        assert (found.status, found.provider_message_id, found.sent_at) == (
            st.SENT,
            f"<m{i}@x>",
            at,
        )
        assert found.claim_token is None and found.lease_expires_at is None
        assert found.recipient_results == {"accepted": 1, "refused": {}}
        assert [(t.status, t.message_id) for t in found.tracking] == [(st.SENT, f"<m{i}@x>")]
    assert status_of(session, taken_over.id) == st.SENDING
    assert status_of(session, delivered.id) == st.DELIVERED
    tracked = session.scalars(select(EmailTracking.message_id)).all()
    assert {"<late@x>", "m-d"} <= set(tracked) and "<gone@x>" not in tracked


def test_a_claim_leaves_the_connection_committing_synchronously(pg_session: Session) -> None:
    job = create(pg_session)
    claim(pg_session, job)
    pg_session.commit()
    setting = pg_session.execute(select(func.current_setting("synchronous_commit"))).scalar()
    assert setting == "on"


def test_a_retry_counts_the_attempt_until_none_are_left(session: Session) -> None:
    job = create(session, max_retries=1)
    later = utcnow() + dt.timedelta(minutes=5)
    token = claim(session, job)
    assert (
        transitions.mark_retrying(
            session, job.id, claim_token=token, error="421 try later", next_attempt_at=later
        )
        == transitions.RetryOutcome.RETRYING
    )
    session.commit()
    found = job_queries.get_job(session, job.id)
    assert found is not None
    assert (found.status, found.retry_count, found.last_error) == (st.RETRYING, 1, "421 try later")
    assert found.scheduled_at == later

    assert send_path.claim_job(session, job.id, lease_seconds=60) is None  # still backing off
    again = send_path.claim_job(session, job.id, lease_seconds=60, now=later)
    assert again is not None and again.claim_token not in (None, token)
    outcome = transitions.mark_retrying(
        session, job.id, claim_token=again.claim_token, error="421 again", next_attempt_at=later
    )
    assert outcome == transitions.RetryOutcome.NO_ATTEMPTS_LEFT
    assert transitions.mark_failed(
        session, job.id, error="421 again", claim_token=again.claim_token
    )
    session.commit()
    found = job_queries.get_job(session, job.id)
    assert found is not None and found.status == st.FAILED and found.last_error == "421 again"
    assert [(t.status, t.error_message) for t in found.tracking] == [(st.FAILED, "421 again")]


def test_a_retry_needs_a_job_being_sent(session: Session) -> None:
    job = create(session)
    outcome = transitions.mark_retrying(
        session, job.id, claim_token=uuid.uuid4(), error="x", next_attempt_at=utcnow()
    )
    assert outcome == transitions.RetryOutcome.STALE
    assert status_of(session, job.id) == st.PENDING


def test_delivery_events_only_move_the_status_forward(session: Session) -> None:
    job = create(session)
    token = claim(session, job)
    send_path.mark_sent(
        session, job.id, claim_token=token, provider="ses", provider_message_id="m-1"
    )
    session.commit()
    t0 = utcnow()

    assert transitions.record_event(session, job.id, st.OPENED, t0)
    assert not transitions.record_event(session, job.id, st.DELIVERED, t0 - dt.timedelta(seconds=5))
    assert status_of(session, job.id) == st.OPENED
    assert transitions.record_event(session, job.id, st.CLICKED, t0 + dt.timedelta(seconds=5))
    assert not transitions.record_event(session, job.id, st.OPENED, t0 + dt.timedelta(seconds=9))
    assert not transitions.record_event(session, job.id, st.BOUNCED, t0)
    session.commit()

    found = job_queries.get_job(session, job.id)
    assert found is not None and found.status == st.CLICKED
    [row] = found.tracking
    assert row.status == st.CLICKED
    # The late "delivered" is still recorded; a repeated "opened" keeps the first time.
    assert row.delivered_at == t0 - dt.timedelta(seconds=5)
    assert row.opened_at == t0
    assert row.clicked_at == t0 + dt.timedelta(seconds=5)


def test_a_bounce_ends_a_delivered_job(session: Session) -> None:
    job = create(session)
    token = claim(session, job)
    send_path.mark_sent(
        session, job.id, claim_token=token, provider="ses", provider_message_id="m-2"
    )
    assert transitions.record_event(session, job.id, st.DELIVERED, utcnow())
    assert transitions.record_event(session, job.id, st.BOUNCED, utcnow())
    assert not transitions.record_event(session, job.id, st.OPENED, utcnow())
    assert status_of(session, job.id) == st.BOUNCED


def test_an_event_is_not_a_status_a_webhook_may_set(session: Session) -> None:
    job = create(session)
    with pytest.raises(ValueError, match="not a delivery event"):
        transitions.record_event(session, job.id, st.SENT, utcnow())


def test_a_webhook_before_the_sent_commit_is_not_undone(session: Session) -> None:
    job = create(session)
    token = claim(session, job)
    assert transitions.record_event(session, job.id, st.DELIVERED, utcnow())
    assert not send_path.mark_sent(
        session, job.id, claim_token=token, provider="ses", provider_message_id="m-3"
    )
    session.commit()
    found = job_queries.get_job(session, job.id)
    assert found is not None and found.status == st.DELIVERED
    assert [t.message_id for t in found.tracking] == ["m-3"]


def test_terminal_jobs_stay_where_they_are(session: Session) -> None:
    job = create(session)
    assert transitions.cancel_job(session, job.id)
    assert send_path.claim_job(session, job.id, lease_seconds=60) is None
    assert not transitions.mark_failed(session, job.id, error="x")
    assert not transitions.record_event(session, job.id, st.DELIVERED, utcnow())
    assert not transitions.cancel_job(session, job.id)
    assert status_of(session, job.id) == st.CANCELLED


def test_only_pending_or_scheduled_jobs_can_be_cancelled(session: Session) -> None:
    scheduled = create(session, status=st.SCHEDULED, scheduled_at=utcnow())
    sending = create(session, recipient_email="bob@example.com")
    send_path.claim_job(session, sending.id, lease_seconds=60)
    assert transitions.cancel_job(session, scheduled.id)
    assert not transitions.cancel_job(session, sending.id)
    assert not transitions.cancel_job(session, uuid.uuid4())


def test_deleting_a_job_deletes_its_tracking(session: Session) -> None:
    job = create(session)
    token = claim(session, job)
    send_path.mark_sent(
        session, job.id, claim_token=token, provider="smtp", provider_message_id="m-4"
    )
    session.commit()
    assert housekeeping.delete_job(session, job.id)
    session.commit()
    assert job_queries.get_job(session, job.id) is None
    assert session.scalar(select(func.count()).select_from(EmailTracking)) == 0
    assert not housekeeping.delete_job(session, job.id)


def test_listing_filters_and_pages_newest_first(session: Session) -> None:
    a = create(session, recipient_email="a@example.com")
    b = create(session, recipient_email="b@example.com", job_type="password_reset")
    c = create(session, recipient_email="a@example.com")
    transitions.cancel_job(session, c.id)
    session.commit()

    def ids(**filters: object) -> list[uuid.UUID]:
        return [j.id for j in job_queries.list_jobs(session, **filters)]  # type: ignore[arg-type]

    assert ids() == [c.id, b.id, a.id]
    assert ids(recipient="a@example.com") == [c.id, a.id]
    assert ids(job_type="password_reset") == [b.id]
    assert ids(status=st.CANCELLED) == [c.id]
    assert ids(limit=1, offset=1) == [b.id]
    assert ids(since=b.created_at) == [c.id, b.id]
    assert ids(until=b.created_at) == [a.id]
