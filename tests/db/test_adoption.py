"""Taking over the original service's database: recognised, migrated, its jobs sendable."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from email_worker.config import Settings
from email_worker.db import job_queries, migrate, new_jobs, send_path
from email_worker.db import status as st
from email_worker.db.engines import Engines, create_engine_for
from email_worker.db.session import ReplicaHealth, RoutingSession
from tests.support.pg import scratch_database

TABLES = {"email_jobs", "email_templates", "email_tracking"}


@pytest.fixture(params=["postgresql", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[URL]:
    """An empty database of this test's own, on PostgreSQL and in a SQLite file."""
    if request.param == "sqlite":
        yield URL.create("sqlite", database=str(tmp_path / "original.db"))
        return
    request.getfixturevalue("replica_server")
    with scratch_database("email_worker_adoption") as scratch:
        yield scratch


def run(url: URL, *statements: str, **parameters: object) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(sa.text(statement), parameters)
    finally:
        engine.dispose()


def table_names(url: URL) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def original_schema(url: URL) -> None:
    """The original service's tables: migration 0001's DDL, with no record of it."""
    migrate.upgrade(url, "0001")
    run(url, "DROP TABLE alembic_version")


def original_job(url: URL, job_type: str, template_data: str | None) -> uuid.UUID:
    """A pending job as the original service wrote it: no payload, no lifecycle columns."""
    job_id = uuid.uuid4()
    run(
        url,
        "INSERT INTO email_jobs (id, job_type, recipient_email, template_id, template_data,"
        " status, priority, retry_count, max_retries, created_at, updated_at) VALUES"
        " (:id, :job_type, 'ann@example.com', :job_type, :data, 'pending', 0, 0, 3,"
        " '2024-01-02 03:04:05', '2024-01-02 03:04:05')",
        id=str(job_id) if url.get_backend_name() == "postgresql" else job_id.hex,
        job_type=job_type,
        data=template_data,
    )
    return job_id


@pytest.fixture
def session(url: URL) -> Iterator[RoutingSession]:
    """A send-path session on the database (opened once the test has migrated it)."""
    engine = create_engine_for(url, Settings())
    with RoutingSession(
        engines=Engines(primary=engine, replica=engine), health=ReplicaHealth(), primary=True
    ) as opened:
        yield opened
    engine.dispose()


def test_the_original_database_is_adopted_and_its_jobs_can_be_sent(
    url: URL, session: RoutingSession
) -> None:
    original_schema(url)
    reset = original_job(url, "password_reset", '{"user_name": "Ann", "reset_url": "https://x"}')
    other = original_job(url, "weekly_digest", None)

    migrate.upgrade(url)

    assert migrate.current(url) == migrate.head()
    found = {job.id: job for job in job_queries.get_jobs(session, [reset, other])}
    assert new_jobs.request_payload(found[reset]) == {
        "to": "ann@example.com",
        "template_id": "password_reset",
        "data": {"user_name": "Ann", "reset_url": "https://x"},
        "kind": "password_reset",
    }
    # An unknown job type is sent by the generic task: no kind of its own.
    assert new_jobs.request_payload(found[other]) == {
        "to": "ann@example.com",
        "template_id": "weekly_digest",
        "data": {},
    }
    claimed = send_path.claim_job(session, reset, lease_seconds=60)
    assert claimed is not None and claimed.claim_token is not None
    assert claimed.status == st.SENDING


def test_a_stored_request_is_used_as_it_is(url: URL, session: RoutingSession) -> None:
    migrate.upgrade(url)
    payload = {"to": ["ann@example.com"], "subject": "Hi", "text": "Hello"}
    job, _ = new_jobs.create_job(
        session, job_type="email", recipient_email="ann@example.com", payload=payload
    )
    assert new_jobs.request_payload(job) == payload


def test_a_database_with_some_of_the_tables_is_refused_and_left_alone(url: URL) -> None:
    original_schema(url)
    run(url, "DROP TABLE email_tracking")
    with pytest.raises(migrate.UnknownSchema, match="table email_tracking is missing"):
        migrate.upgrade(url)
    assert table_names(url) == {"email_jobs", "email_templates"}


def test_tables_of_another_shape_are_refused_naming_the_difference(url: URL) -> None:
    original_schema(url)
    run(url, "ALTER TABLE email_jobs ADD COLUMN campaign VARCHAR(50)")
    with pytest.raises(migrate.UnknownSchema, match="email_jobs has unknown columns campaign"):
        migrate.upgrade(url)
    assert table_names(url) == TABLES


def test_a_migrated_or_empty_database_upgrades_as_before(url: URL) -> None:
    migrate.upgrade(url, "0002")
    migrate.upgrade(url)
    assert migrate.current(url) == migrate.head()
    assert table_names(url) == TABLES | {
        "alembic_version",
        "email_bulks",
        "email_bulk_recipients",
        "email_events",
        "email_suppressions",
        "api_keys",
        "api_requests",
        "audit_log",
        "console_users",
    }
