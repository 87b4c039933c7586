"""The routing session against a real primary and a real streaming replica."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from email_worker.db import housekeeping, job_queries, new_jobs, send_path, templates
from email_worker.db.engines import Engines
from email_worker.db.models import EmailJob
from email_worker.db.session import ReplicaHealth, RoutingSession
from tests.db.conftest import REPLICA_PASSWORD, Statements
from tests.support.tcp_proxy import TcpProxy

NewSession = Callable[..., RoutingSession]
IN_RECOVERY = sa.select(sa.func.pg_is_in_recovery())


def new_job(session: RoutingSession, recipient: str = "ada@example.com") -> EmailJob:
    job, _ = new_jobs.create_job(
        session,
        job_type="welcome_email",
        recipient_email=recipient,
        payload={"to": recipient, "template_id": "welcome_email"},
    )
    return job


def test_each_operation_goes_to_the_server_the_original_service_used(
    new_session: NewSession, statements: Statements, wait_for_replica: Callable[[], None]
) -> None:
    with new_session() as session:
        job = new_job(session)
        session.commit()
    with new_session() as session:
        send_path.claim_job(session, job.id, lease_seconds=60)
        session.commit()
    with new_session() as session:
        templates.upsert_template(
            session,
            id="welcome_email",
            name="Welcome",
            subject="Hi",
            html_template="<p>Hi</p>",
            text_template="Hi",
        )
        session.commit()
    assert set(statements.servers()) == {"primary"}
    wait_for_replica()

    statements.clear()
    with new_session() as session:
        assert job_queries.get_job(session, job.id) is not None
    with new_session() as session:
        assert [j.id for j in job_queries.list_jobs(session)] == [job.id]
    with new_session() as session:
        assert templates.get_active_template(session, "welcome_email") is not None
        assert len(templates.list_templates(session)) == 1
    assert statements.servers("SELECT") and set(statements.servers("SELECT")) == {"replica"}

    statements.clear()
    with new_session() as session:
        assert housekeeping.delete_job(session, job.id)
        session.commit()
    assert set(statements.servers()) == {"primary"}


def test_reads_are_answered_by_the_replica(new_session: NewSession) -> None:
    with new_session() as session:
        assert session.scalar(IN_RECOVERY) is True
        assert session.scalar(sa.text("SELECT inet_server_port()")) == 5433


def test_a_read_after_a_write_in_the_same_transaction_sees_the_write(
    new_session: NewSession, statements: Statements
) -> None:
    with new_session() as session:
        job = new_job(session)
        found = job_queries.get_job(session, job.id)
        assert found is not None and found.recipient_email == "ada@example.com"
        assert session.scalar(IN_RECOVERY) is False
        session.commit()
        # A new transaction reads from the replica again.
        assert session.scalar(IN_RECOVERY) is True
    assert "replica" not in statements.servers("INSERT")


def test_an_unflushed_change_is_flushed_to_the_primary_before_a_read(
    new_session: NewSession, wait_for_replica: Callable[[], None]
) -> None:
    with new_session() as session:
        job = new_job(session)
        session.commit()
    wait_for_replica()
    with new_session() as session:
        loaded = job_queries.get_job(session, job.id)
        assert loaded is not None
        loaded.subject = "changed, not yet flushed"
        found = job_queries.list_jobs(session, recipient="ada@example.com")
        assert [j.subject for j in found] == ["changed, not yet flushed"]
        assert session.scalar(IN_RECOVERY) is False


def test_the_send_path_reads_what_was_just_committed_from_the_primary(
    new_session: NewSession, statements: Statements
) -> None:
    with new_session() as producer:
        job = new_job(producer)
        producer.commit()
    with new_session(primary=True) as worker:
        assert job_queries.get_job(worker, job.id) is not None
        assert worker.scalar(IN_RECOVERY) is False
    assert set(statements.servers("SELECT")) == {"primary"}


def test_select_for_update_runs_on_the_primary(new_session: NewSession) -> None:
    with new_session() as session:
        session.scalars(sa.select(EmailJob.id).with_for_update()).all()
        assert session.scalar(IN_RECOVERY) is False


def test_reads_fall_back_to_the_primary_while_the_replica_is_down(
    engines_through_link: Engines,
    replica_link: TcpProxy,
    new_session: NewSession,
    health: ReplicaHealth,
    statements: Statements,
    caplog: pytest.LogCaptureFixture,
    wait_for_replica: Callable[[], None],
) -> None:
    with new_session() as session:
        job = new_job(session)
        session.commit()
    with new_session() as session:
        assert session.scalar(IN_RECOVERY) is True  # a pooled replica connection to lose

    caplog.set_level(logging.INFO, logger="email_worker.db.session")
    health.retry_interval = 6.0  # longer than the replica is away
    replica_link.close()
    try:
        statements.clear()
        before = time.monotonic()
        with new_session() as session:
            assert job_queries.get_job(session, job.id) is not None
        after = time.monotonic()
        with new_session() as session:
            assert [j.id for j in job_queries.list_jobs(session)] == [job.id]
        with new_session() as session:
            assert templates.list_templates(session) == []
            assert session.scalar(IN_RECOVERY) is False
        assert set(statements.servers("SELECT")) == {"primary"}
        assert health.replica_fallbacks >= 4
        assert not health.replica_available
        warnings = [
            r
            for r in caplog.records
            if r.name == "email_worker.db.session" and r.levelno == logging.WARNING
        ]
        assert len(warnings) == 1 and "replica" in warnings[0].getMessage()
    finally:
        replica_link.open()

    # Back, but not tried again before the interval has passed.
    with new_session() as session:
        assert session.scalar(IN_RECOVERY) is False
    assert time.monotonic() < before + health.retry_interval
    time.sleep(max(0.0, after + health.retry_interval - time.monotonic()))
    wait_for_replica()
    with new_session() as session:
        assert session.scalar(IN_RECOVERY) is True
        assert job_queries.get_job(session, job.id) is not None
    assert health.replica_available
    assert REPLICA_PASSWORD not in caplog.text
    assert "***" in caplog.text  # the replica's URL is logged with its password hidden


def test_without_a_replica_everything_uses_the_one_database(
    sqlite_engines: Engines,
) -> None:
    health = ReplicaHealth()
    with RoutingSession(engines=sqlite_engines, health=health) as session:
        job = new_job(session)
        session.commit()
        assert job_queries.get_job(session, job.id) is not None
    assert health.replica_fallbacks == 0
