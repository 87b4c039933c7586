"""Beat's housekeeping: lost workers and retention."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable

from sqlalchemy import event, func, select

from email_worker.db import housekeeping, job_queries, new_jobs, send_path
from email_worker.db import status as st
from email_worker.db.models import EmailJob, EmailTracking, utcnow
from email_worker.db.session import RoutingSession

NewSession = Callable[..., RoutingSession]


def sending_job(session: RoutingSession, *, retry_count: int, max_retries: int = 3) -> uuid.UUID:
    job, _ = new_jobs.create_job(
        session,
        job_type="welcome_email",
        recipient_email="a@example.com",
        payload={},
        max_retries=max_retries,
    )
    job.retry_count = retry_count
    session.flush()
    assert send_path.claim_job(session, job.id, lease_seconds=30) is not None
    return job.id


def test_a_lost_send_is_retried_while_attempts_remain_then_failed(
    new_session: NewSession,
) -> None:
    with new_session() as session:
        retried = sending_job(session, retry_count=1)
        lost = sending_job(session, retry_count=3)
        session.commit()
    with new_session() as session:
        assert housekeeping.reap_expired_leases(session, utcnow()) == ([], [])  # leases still valid
        later = utcnow() + dt.timedelta(seconds=31)
        assert housekeeping.reap_expired_leases(session, later) == ([retried], [lost])
        session.commit()

    with new_session(primary=True) as session:
        again = job_queries.get_job(session, retried)
        assert again is not None
        assert (again.status, again.retry_count) == (st.RETRYING, 2)
        assert again.lease_expires_at is None and again.scheduled_at == later
        assert send_path.claim_job(session, retried, lease_seconds=30, now=later) is not None

        failed = job_queries.get_job(session, lost)
        assert failed is not None and failed.status == st.FAILED
        assert failed.last_error is not None and "delivery is unknown" in failed.last_error
        assert [t.error_message for t in failed.tracking] == [failed.last_error]


def test_a_send_that_finishes_after_its_lease_was_reaped_still_counts(
    new_session: NewSession,
) -> None:
    with new_session() as session:
        job_id = sending_job(session, retry_count=0)
        housekeeping.reap_expired_leases(session, utcnow() + dt.timedelta(seconds=31))
        assert send_path.mark_sent(
            session, job_id, claim_token=None, provider="smtp", provider_message_id="m"
        )
        session.commit()
    with new_session(primary=True) as session:
        assert send_path.claim_job(session, job_id, lease_seconds=30) is None  # no second send


def test_old_finished_jobs_are_deleted_in_batches(new_session: NewSession) -> None:
    now = utcnow()
    month_ago = now - dt.timedelta(days=31)
    with new_session() as session:

        def make(status: str, created_at: dt.datetime) -> uuid.UUID:
            job, _ = new_jobs.create_job(
                session, job_type="welcome_email", recipient_email="a@example.com", payload={}
            )
            job.status, job.created_at = status, created_at
            session.add(EmailTracking(job_id=job.id, status=status))
            return job.id

        old = [
            make(s, month_ago)
            for s in (
                st.SENT,
                st.DELIVERED,
                st.OPENED,
                st.CLICKED,
                st.BOUNCED,
                st.FAILED,
                st.CANCELLED,
            )
        ]
        kept = [make(s, month_ago) for s in (st.PENDING, st.SCHEDULED, st.SENDING, st.RETRYING)]
        kept += [make(st.SENT, now)]
        session.commit()

    with new_session() as session:
        commits: list[int] = []
        event.listen(session, "after_commit", lambda s: commits.append(1))
        deleted = housekeeping.delete_old_jobs(session, now - dt.timedelta(days=30), batch_size=3)
        assert deleted == len(old) == 7
        assert len(commits) == 3  # 3 + 3 + 1

    with new_session(primary=True) as session:
        assert set(session.scalars(select(EmailJob.id))) == set(kept)
        remaining = session.scalars(select(EmailTracking.job_id)).all()
        assert set(remaining) == set(kept)
        assert session.scalar(select(func.count()).select_from(EmailTracking)) == len(kept)


def test_a_job_whose_publish_was_refused_goes_with_the_next_dispatch_once(
    new_session: NewSession,
) -> None:
    with new_session() as session:
        refused, queued = (
            new_jobs.create_job(
                session, job_type="welcome_email", recipient_email="a@example.com", payload={}
            )[0].id
            for _ in range(2)
        )
        session.commit()
    now = utcnow()
    with new_session() as session:
        assert housekeeping.mark_unpublished(session, [refused], now) == 1
        session.commit()
    with new_session() as session:
        assert housekeeping.dispatch_due_jobs(session, now) == [refused]  # not the queued one
        session.commit()
    with new_session() as session:
        assert housekeeping.dispatch_due_jobs(session, now) == []  # published: unflagged
        job = job_queries.get_job(session, refused)
        assert job is not None and (job.status, job.last_error) == (st.PENDING, None)
