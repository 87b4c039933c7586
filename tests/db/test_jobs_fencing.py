"""Fencing: a worker whose lease was reaped cannot overrule the job's next claim."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable

from sqlalchemy import select

from email_worker.db import housekeeping, job_queries, new_jobs, send_path, transitions
from email_worker.db import status as st
from email_worker.db.models import EmailJob, EmailTracking
from email_worker.db.session import RoutingSession

NewSession = Callable[..., RoutingSession]
LEASE = 0.2  # seconds; the tests wait it out on the database's clock


def claimed_job(new_session: NewSession, *, lease: float = 60, max_retries: int = 3) -> EmailJob:
    """A stored job claimed by a first worker (the returned row carries its token)."""
    with new_session(primary=True) as session:
        job, _ = new_jobs.create_job(
            session,
            job_type="welcome_email",
            recipient_email="ann@example.com",
            payload={"to": "ann@example.com"},
            max_retries=max_retries,
        )
        claimed = send_path.claim_job(session, job.id, lease_seconds=lease)
        session.commit()
    assert claimed is not None and claimed.claim_token is not None
    return claimed


def reap(new_session: NewSession, *, grace_seconds: float = 0) -> list[uuid.UUID]:
    time.sleep(LEASE + 0.1)
    with new_session(primary=True) as session:
        requeued, failed = housekeeping.reap_expired_leases(session, grace_seconds=grace_seconds)
        session.commit()
    assert failed == []
    return requeued


def reclaim(new_session: NewSession, job_id: uuid.UUID) -> uuid.UUID:
    with new_session(primary=True) as session:
        claimed = send_path.claim_job(session, job_id, lease_seconds=60)
        session.commit()
    assert claimed is not None and claimed.claim_token is not None
    return claimed.claim_token


def state(new_session: NewSession, job_id: uuid.UUID) -> EmailJob:
    with new_session(primary=True) as session:
        job = job_queries.get_job(session, job_id)
        assert job is not None
        return job


def test_a_stale_worker_cannot_fail_or_retry_a_job_claimed_again(new_session: NewSession) -> None:
    first = claimed_job(new_session, lease=LEASE)
    assert reap(new_session) == [first.id]
    assert state(new_session, first.id).claim_token is None
    second = reclaim(new_session, first.id)
    assert second != first.claim_token

    with new_session(primary=True) as session:
        assert first.claim_token is not None
        outcome = transitions.mark_retrying(
            session, first.id, claim_token=first.claim_token, error="421", retry_in_seconds=30
        )
        assert outcome == transitions.RetryOutcome.STALE
        assert not transitions.mark_failed(
            session, first.id, error="550", claim_token=first.claim_token
        )
        session.commit()

    job = state(new_session, first.id)
    assert (job.status, job.claim_token, job.retry_count) == (st.SENDING, second, 1)
    assert [t.status for t in job.tracking] == []
    # The current claim still decides.
    with new_session(primary=True) as session:
        assert transitions.mark_failed(
            session, first.id, error="550 no such user", claim_token=second
        )
        session.commit()
    assert state(new_session, first.id).status == st.FAILED


def test_a_late_sent_record_after_the_reap_wins_and_stops_a_second_send(
    new_session: NewSession,
) -> None:
    first = claimed_job(new_session, lease=LEASE)
    assert reap(new_session, grace_seconds=30) == [first.id]
    with new_session(primary=True) as session:
        # Not yet due again: the grace keeps a new claim away.
        assert send_path.claim_job(session, first.id, lease_seconds=60) is None
        assert send_path.mark_sent(
            session,
            first.id,
            claim_token=first.claim_token,
            provider="smtp",
            provider_message_id="m-1",
        )
        session.commit()
    with new_session(primary=True) as session:
        assert (
            send_path.claim_job(session, first.id, lease_seconds=60, now=dt.datetime(2100, 1, 1))
            is None
        )
    job = state(new_session, first.id)
    assert (job.status, job.provider_message_id) == (st.SENT, "m-1")


def test_a_sent_record_of_a_stale_claim_leaves_the_new_claim_alone(
    new_session: NewSession,
) -> None:
    first = claimed_job(new_session, lease=LEASE)
    reap(new_session)
    second = reclaim(new_session, first.id)
    with new_session(primary=True) as session:
        moved = send_path.mark_sent(
            session,
            first.id,
            claim_token=first.claim_token,
            provider="smtp",
            provider_message_id="a",
        )
        session.commit()
    assert not moved
    job = state(new_session, first.id)
    assert (job.status, job.claim_token) == (st.SENDING, second)
    assert [(t.status, t.message_id) for t in job.tracking] == [(st.SENT, "a")]

    with new_session(primary=True) as session:
        assert send_path.mark_sent(
            session, first.id, claim_token=second, provider="smtp", provider_message_id="b"
        )
        session.commit()
    job = state(new_session, first.id)
    assert (job.status, job.provider_message_id, job.claim_token) == (st.SENT, "b", None)


def test_a_sent_record_without_the_token_does_not_move_a_job_being_sent(
    new_session: NewSession,
) -> None:
    job = claimed_job(new_session)
    with new_session(primary=True) as session:
        assert not send_path.mark_sent(
            session, job.id, claim_token=None, provider="smtp", provider_message_id="x"
        )
        assert not send_path.mark_sent(
            session, job.id, claim_token=uuid.uuid4(), provider="smtp", provider_message_id="x"
        )
        session.commit()
    assert state(new_session, job.id).status == st.SENDING


def test_a_retry_tells_no_attempts_left_from_a_stale_claim(new_session: NewSession) -> None:
    job = claimed_job(new_session, max_retries=0)
    assert job.claim_token is not None
    with new_session(primary=True) as session:
        outcome = transitions.mark_retrying(
            session, job.id, claim_token=job.claim_token, error="421", retry_in_seconds=5
        )
        assert outcome == transitions.RetryOutcome.NO_ATTEMPTS_LEFT
        assert transitions.mark_failed(session, job.id, error="421", claim_token=job.claim_token)
        session.commit()
    assert state(new_session, job.id).status == st.FAILED

    with new_session(primary=True) as session:
        gone = transitions.mark_retrying(
            session, uuid.uuid4(), claim_token=job.claim_token, error="421", retry_in_seconds=5
        )
        assert gone == transitions.RetryOutcome.STALE


def test_a_message_set_aside_fails_its_job_whoever_holds_it(new_session: NewSession) -> None:
    job = claimed_job(new_session)
    with new_session(primary=True) as session:
        assert transitions.set_aside_job(
            session, job.id, error="the message kills worker processes"
        )
        assert not transitions.set_aside_job(session, job.id, error="again")
        session.commit()
    found = state(new_session, job.id)
    assert (found.status, found.claim_token) == (st.FAILED, None)
    assert [(t.status, t.error_message) for t in found.tracking] == [
        (st.FAILED, "the message kills worker processes")
    ]
    with new_session(primary=True) as session:
        rows = session.scalars(select(EmailTracking).where(EmailTracking.job_id == job.id)).all()
        assert len(rows) == 1
