"""Races between real connections: claims, dispatch, relays and idempotent creates."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import func, select

from email_worker.db import housekeeping, new_jobs, send_path, transitions
from email_worker.db import status as st
from email_worker.db.models import EmailJob, utcnow
from email_worker.db.session import RoutingSession

NewSession = Callable[..., RoutingSession]
T = TypeVar("T")


def side_by_side(count: int, work: Callable[[int], T]) -> list[T]:
    """Run ``work(0..count-1)`` in threads released at the same moment."""
    start = threading.Barrier(count)

    def run(index: int) -> T:
        start.wait()
        return work(index)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


def make_jobs(new_session: NewSession, count: int, **overrides: Any) -> list[uuid.UUID]:
    with new_session() as session:
        made = [
            new_jobs.create_job(
                session,
                job_type="welcome_email",
                recipient_email=f"user{i}@example.com",
                payload={},
                **overrides,
            )
            for i in range(count)
        ]
        session.commit()
        return [job.id for job, _ in made]


def test_two_workers_claiming_one_job_exactly_one_wins(new_session: NewSession) -> None:
    for job_id in make_jobs(new_session, 5):

        def claim(_: int, job_id: uuid.UUID = job_id) -> bool:
            with new_session(primary=True) as session:
                claimed = send_path.claim_job(session, job_id, lease_seconds=60)
                time.sleep(0.02)  # hold the row lock while the other claim waits on it
                session.commit()
                return claimed is not None

        assert sorted(side_by_side(2, claim)) == [False, True]


def test_two_dispatchers_never_publish_the_same_job(new_session: NewSession) -> None:
    due = set(
        make_jobs(
            new_session, 30, status=st.SCHEDULED, scheduled_at=utcnow() - dt.timedelta(seconds=1)
        )
    )

    def dispatch(_: int) -> list[uuid.UUID]:
        taken: list[uuid.UUID] = []
        while True:
            with new_session() as session:
                batch = housekeeping.dispatch_due_jobs(session, utcnow(), limit=4)
                time.sleep(0.01)  # keep the rows locked while the other dispatcher looks
                session.commit()
            if not batch:
                return taken
            taken += batch

    first, second = side_by_side(2, dispatch)
    assert set(first).isdisjoint(second)
    assert sorted(first + second) == sorted(due)
    assert first and second  # both did part of the work
    with new_session(primary=True) as session:  # what was committed, not the replica's lag
        statuses = session.scalars(select(EmailJob.status).distinct()).all()
        assert statuses == [st.PENDING]


def test_a_cancelled_or_future_job_is_not_dispatched(new_session: NewSession) -> None:
    past = utcnow() - dt.timedelta(seconds=1)
    [cancelled, due] = make_jobs(new_session, 2, status=st.SCHEDULED, scheduled_at=past)
    make_jobs(new_session, 1, status=st.SCHEDULED, scheduled_at=utcnow() + dt.timedelta(hours=1))
    with new_session() as session:
        assert transitions.cancel_job(session, cancelled)
        session.commit()
    with new_session() as session:
        assert housekeeping.dispatch_due_jobs(session, utcnow(), limit=10) == [due]


def test_two_relays_never_take_the_same_stranded_job(new_session: NewSession) -> None:
    stranded = set(make_jobs(new_session, 20))
    later = utcnow() + dt.timedelta(minutes=10)

    def relay(_: int) -> list[uuid.UUID]:
        with new_session() as session:
            taken = housekeeping.stranded_jobs(session, later, older_than_seconds=60, limit=100)
            time.sleep(0.02)
            session.commit()
            return taken

    first, second = side_by_side(2, relay)
    assert set(first).isdisjoint(second)
    assert set(first) | set(second) == stranded
    # Taken in this window: not again until they have been stuck for another window.
    with new_session() as session:
        assert housekeeping.stranded_jobs(session, later, older_than_seconds=60, limit=100) == []
        again = later + dt.timedelta(seconds=61)
        assert set(
            housekeeping.stranded_jobs(session, again, older_than_seconds=60, limit=100)
        ) == (stranded)


def test_concurrent_creates_with_one_idempotency_key_make_one_row(
    new_session: NewSession,
) -> None:
    def create(index: int) -> tuple[uuid.UUID, bool]:
        with new_session() as session:
            job, created = new_jobs.create_job(
                session,
                job_type="password_reset",
                recipient_email=f"try{index}@example.com",
                payload={},
                idempotency_key="reset-7",
            )
            time.sleep(0.02)  # the other inserts now wait on this uncommitted key
            session.commit()
            return job.id, created

    results = side_by_side(4, create)
    assert len({job_id for job_id, _ in results}) == 1
    assert sorted(created for _, created in results) == [False, False, False, True]
    with new_session(primary=True) as session:  # the replica may not have replayed it yet
        count = session.scalar(select(func.count()).where(EmailJob.idempotency_key == "reset-7"))
        assert count == 1
