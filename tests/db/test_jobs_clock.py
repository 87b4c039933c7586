"""Leases and due times follow the database's clock, in UTC whatever its time zone."""

from __future__ import annotations

import datetime as dt
import secrets
import time
import uuid
from collections.abc import Iterator
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from email_worker.config import Settings
from email_worker.db import housekeeping, job_queries, new_jobs, send_path, transitions
from email_worker.db import status as st
from email_worker.db.engines import Engines, create_engine_for
from email_worker.db.models import EmailJob
from email_worker.db.session import ReplicaHealth, RoutingSession
from tests.support.pg import admin_url, create_database, drop_database

NEW_YORK = "America/New_York"
TOLERANCE = dt.timedelta(seconds=0.5)


@pytest.fixture(scope="module")
def new_york_database(replica_server: None) -> Iterator[Engines]:
    """A migrated database whose sessions run with TimeZone America/New_York."""
    name = f"email_worker_clock_{secrets.token_hex(4)}"
    create_database(name)
    admin = sa.create_engine(admin_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f"ALTER DATABASE \"{name}\" SET timezone = '{NEW_YORK}'")
    admin.dispose()
    engine = create_engine_for(admin_url(database=name), Settings())
    try:
        yield Engines(primary=engine, replica=engine)
    finally:
        engine.dispose()
        drop_database(name)


@pytest.fixture
def session(new_york_database: Engines) -> Iterator[Session]:
    """A session on the New York database, with every job deleted first."""
    with new_york_database.primary.begin() as connection:
        connection.exec_driver_sql("TRUNCATE email_tracking, email_jobs")
    with RoutingSession(engines=new_york_database, health=ReplicaHealth(), primary=True) as opened:
        yield opened


def database_utc_now(session: Session) -> dt.datetime:
    return session.execute(sa.text("SELECT now() AT TIME ZONE 'UTC'")).scalar_one()


def new_job(session: Session, **overrides: object) -> EmailJob:
    arguments: dict[str, object] = {
        "job_type": "welcome_email",
        "recipient_email": "ann@example.com",
        "payload": {},
    }
    arguments.update(overrides)
    job, _ = new_jobs.create_job(session, **arguments)  # type: ignore[arg-type]
    session.commit()
    return job


def claimed(session: Session, job_id: uuid.UUID, lease_seconds: float = 60) -> EmailJob:
    job = send_path.claim_job(session, job_id, lease_seconds=lease_seconds)
    session.commit()
    assert job is not None and job.claim_token is not None
    return job


def test_the_database_runs_in_another_time_zone(session: Session) -> None:
    assert session.execute(sa.text("SHOW TimeZone")).scalar_one() == NEW_YORK


def test_a_lease_runs_out_by_the_database_clock(session: Session) -> None:
    job = new_job(session)
    lease = claimed(session, job.id, lease_seconds=1).lease_expires_at
    assert lease is not None
    assert abs(lease - (database_utc_now(session) + dt.timedelta(seconds=1))) < TOLERANCE
    assert housekeeping.reap_expired_leases(session) == ([], [])
    time.sleep(1.2)
    assert housekeeping.reap_expired_leases(session, grace_seconds=10) == ([job.id], [])
    session.commit()
    found = job_queries.get_job(session, job.id)
    assert found is not None and found.scheduled_at is not None
    expected = database_utc_now(session) + dt.timedelta(seconds=10)
    assert abs(found.scheduled_at - expected) < TOLERANCE


def test_new_jobs_and_retries_are_stamped_with_the_database_clock(session: Session) -> None:
    job = new_job(session)
    assert abs(job.created_at - database_utc_now(session)) < TOLERANCE
    token = claimed(session, job.id).claim_token
    assert token is not None
    outcome = transitions.mark_retrying(
        session, job.id, claim_token=token, error="421", retry_in_seconds=90
    )
    assert outcome == transitions.RetryOutcome.RETRYING
    session.commit()
    found = job_queries.get_job(session, job.id)
    assert found is not None and found.scheduled_at is not None
    now = database_utc_now(session)
    assert abs(found.updated_at - now) < TOLERANCE
    assert abs(found.scheduled_at - (now + dt.timedelta(seconds=90))) < TOLERANCE


def test_a_retry_parked_for_a_long_wait_is_dispatched_once_when_due(session: Session) -> None:
    parked, short = new_job(session), new_job(session, recipient_email="bob@example.com")
    for job, wait in ((parked, 1.0), (short, 0.2)):
        token = claimed(session, job.id).claim_token
        assert token is not None
        transitions.mark_retrying(
            session, job.id, claim_token=token, error="421", retry_in_seconds=wait
        )
    session.commit()

    assert housekeeping.dispatch_due_jobs(session, hold_seconds=0.5) == []  # not due yet
    time.sleep(1.1)
    assert housekeeping.dispatch_due_jobs(session) == []  # retries only with hold_seconds
    # The short retry is the broker's to deliver; the parked one has nobody else.
    assert housekeeping.dispatch_due_jobs(session, hold_seconds=0.5) == [parked.id]
    session.commit()
    assert housekeeping.dispatch_due_jobs(session, hold_seconds=0.5) == []
    session.commit()
    found = job_queries.get_job(session, parked.id)
    assert found is not None and found.status == st.RETRYING
    assert found.scheduled_at is not None and found.updated_at >= found.scheduled_at


def test_scheduled_and_stranded_jobs_are_due_by_the_database_clock(session: Session) -> None:
    soon = database_utc_now(session) + dt.timedelta(seconds=0.5)
    scheduled = new_job(session, status=st.SCHEDULED, scheduled_at=soon)
    pending = new_job(session, recipient_email="bob@example.com")
    assert housekeeping.dispatch_due_jobs(session) == []
    assert housekeeping.stranded_jobs(session, older_than_seconds=0.5) == []
    time.sleep(0.7)
    assert housekeeping.dispatch_due_jobs(session) == [scheduled.id]
    session.commit()
    assert housekeeping.stranded_jobs(session, older_than_seconds=0.5) == [pending.id]


def test_listings_take_aware_and_naive_times(session: Session) -> None:
    older = new_job(session)
    time.sleep(0.01)
    newer = new_job(session, recipient_email="bob@example.com")
    naive = newer.created_at
    aware = naive.replace(tzinfo=dt.UTC).astimezone(ZoneInfo(NEW_YORK))

    def ids(**filters: dt.datetime) -> list[uuid.UUID]:
        return [job.id for job in job_queries.list_jobs(session, **filters)]  # type: ignore[arg-type]

    assert ids(since=aware) == ids(since=naive) == [newer.id]
    assert ids(until=aware) == ids(until=naive) == [older.id]
