"""Jobs stored under an id their producer chose: once per id, whoever stores it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from email_worker.db import job_queries, new_jobs
from email_worker.db.models import EmailJob
from email_worker.db.session import RoutingSession
from tests.db.test_jobs_concurrency import side_by_side

NewSession = Callable[..., RoutingSession]


def store(session: Session, job_id: uuid.UUID, **overrides: object) -> tuple[EmailJob, bool]:
    arguments: dict[str, object] = {
        "job_type": "password_reset",
        "recipient_email": "ann@example.com",
        "payload": {"to": "ann@example.com"},
        "job_id": job_id,
    }
    arguments.update(overrides)
    stored = new_jobs.create_job(session, **arguments)  # type: ignore[arg-type]
    session.commit()
    return stored


def count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(EmailJob)) or 0


def test_a_job_is_stored_under_the_id_it_was_given(session: Session) -> None:
    job_id = uuid.uuid4()
    job, created = store(session, job_id, retry_count=2)
    assert created and job.id == job_id
    found = job_queries.get_job(session, job_id)
    assert found is not None and found.retry_count == 2


def test_a_second_store_of_one_id_keeps_the_first_job(session: Session) -> None:
    job_id = uuid.uuid4()
    store(session, job_id)
    again, created = store(session, job_id, recipient_email="bob@example.com")
    assert not created
    assert (again.id, again.recipient_email) == (job_id, "ann@example.com")
    assert count(session) == 1


def test_an_id_or_an_idempotency_key_seen_before_stores_nothing(session: Session) -> None:
    first, _ = store(session, uuid.uuid4(), idempotency_key="reset-1")
    again, created = store(session, uuid.uuid4(), idempotency_key="reset-1")
    assert not created and again.id == first.id
    assert count(session) == 1


def test_a_negative_attempt_count_is_refused(session: Session) -> None:
    with pytest.raises(ValueError, match="retry_count"):
        store(session, uuid.uuid4(), retry_count=-1)


def test_concurrent_stores_of_one_id_make_one_row(new_session: NewSession) -> None:
    job_id = uuid.uuid4()

    def create(index: int) -> tuple[uuid.UUID, bool, str]:
        with new_session() as session:
            job, created = new_jobs.create_job(
                session,
                job_type="password_reset",
                recipient_email=f"try{index}@example.com",
                payload={},
                job_id=job_id,
            )
            time.sleep(0.02)  # the other inserts now wait on this uncommitted row
            session.commit()
            return job.id, created, job.recipient_email

    results = side_by_side(4, create)
    assert {job for job, _, _ in results} == {job_id}
    assert sorted(created for _, created, _ in results) == [False, False, False, True]
    assert len({recipient for _, _, recipient in results}) == 1  # all see the stored row
    with new_session(primary=True) as session:  # the replica may not have it yet
        assert count(session) == 1
