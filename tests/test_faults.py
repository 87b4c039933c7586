"""Faults around a send, with real worker processes: a broker that refuses a retry, a primary
that goes away after the provider accepted, a worker whose claim was taken over, a message
delivered twice. Each test counts what reached the SMTP server."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from email_worker.kinds import get_kind
from tests.conftest import DATABASE, TEST_ENV, purge_queues, queue_length
from tests.support.jobs import stored, stored_verification_job
from tests.support.pg import accept_connections, admin_url, refuse_connections, wait_for_replay
from tests.support.processes import running, start_worker_process
from tests.support.smtp_server import SmtpServer
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("clean_tables")]
DOMAIN = "mail.example.com"


@pytest.fixture
def data_hook(smtp: SmtpServer) -> Iterator[Callable[[Any], None]]:
    """Install a coroutine that answers DATA instead of the server's handler, for one test."""

    def install(handler: Any) -> None:
        smtp.handler.handle_DATA = handler  # type: ignore[method-assign]

    yield install
    smtp.handler.__dict__.pop("handle_DATA", None)


@dataclass
class RedisUser:
    """A Redis user of one test's own, and a way to refuse it LPUSH (how a message is published)."""

    broker_url: str
    refuse: Callable[..., None]


@pytest.fixture
def publishing_refused(redis_client):  # type: ignore[no-untyped-def]
    """A Redis user for the test's worker alone: refusing it LPUSH touches no other test."""
    name, password = f"email-worker-test-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    redis_client.execute_command("ACL", "SETUSER", name, "on", f">{password}", "~*", "&*", "+@all")

    def refuse(refused: bool = True) -> None:
        redis_client.execute_command("ACL", "SETUSER", name, "-lpush" if refused else "+lpush")

    yield RedisUser(f"redis://{name}:{password}@127.0.0.1:6379/0", refuse)
    redis_client.execute_command("ACL", "DELUSER", name)


def test_a_retry_the_broker_refuses_is_kept_in_the_database_and_sent_once(
    smtp: SmtpServer,
    redis_client,
    publishing_refused: RedisUser,
    data_hook,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    from email_worker.tasks import send_email
    from email_worker.worker.periodic import dispatch_due_jobs

    purge_queues(redis_client)
    original = smtp.handler.handle_DATA
    refused = threading.Event()

    async def refuse_while_the_broker_refuses(server: Any, session: Any, envelope: Any) -> str:
        if refused.is_set():
            return await original(server, session, envelope)
        refused.set()
        publishing_refused.refuse()  # the worker cannot publish the retry; all else works
        return "451 4.3.0 Try again later"

    data_hook(refuse_while_the_broker_refuses)
    result = send_email.delay(to="ann@example.com", subject="Your receipt", text="Thanks")
    worker = start_worker_process(
        tmp_path / "worker.log", env={"BROKER_URL": publishing_refused.broker_url}
    )
    with running(worker):
        job = wait_for(lambda: stored(result.id), "the retry to be stored", timeout=60)
        publishing_refused.refuse(False)
        assert job.status == "scheduled" and job.retry_count == 1
        time.sleep(max(0.0, (job.scheduled_at - job.created_at).total_seconds()) + 0.5)
        assert dispatch_due_jobs() == 1  # beat's dispatcher, once it runs
        smtp.wait_for(1, timeout=30)
        time.sleep(1.0)  # a duplicate would arrive now
    assert [r.message["Message-ID"] for r in smtp.received] == [f"<{result.id}@{DOMAIN}>"]
    assert stored(result.id).status == "sent"
    assert "retry could not be published" in (tmp_path / "worker.log").read_text()


def test_a_retry_longer_than_the_threshold_waits_in_the_database(
    smtp: SmtpServer,
    redis_client,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    from email_worker.tasks import send_email
    from email_worker.worker.periodic import dispatch_due_jobs

    purge_queues(redis_client)
    smtp.handler.reply_next("DATA", "451 4.3.0 Try again later")
    result = send_email.delay(to="ann@example.com", subject="Later", text="x")
    # A first backoff of 3 to 6 s, beyond the 2 s the broker may hold a message here.
    worker = start_worker_process(
        tmp_path / "worker.log", env={"RETRY_DELAY": "6", "RETRY_BACKOFF_MAX": "6"}
    )
    with running(worker):
        job = wait_for(lambda: stored(result.id), "the retry to be stored")
        assert job.status == "scheduled" and job.retry_count == 1
        assert sum(queue_length(redis_client, p) for p in ("high", "default", "low")) == 0
        assert dispatch_due_jobs() == 0  # not due yet
        wait_for(dispatch_due_jobs, "the retry to fall due", timeout=15)
        smtp.wait_for(1, timeout=30)
        time.sleep(1.0)
    assert [r.message["Message-ID"] for r in smtp.received] == [f"<{result.id}@{DOMAIN}>"]
    assert smtp.handler.data_attempts == 2


def test_an_accepted_email_is_not_sent_again_when_the_primary_was_away_to_record_it(
    smtp: SmtpServer,
    redis_client,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    from email_worker.worker.periodic import reap_expired_leases

    purge_queues(redis_client)
    smtp.handler.data_delay = 1.0  # the worker is inside DATA when the primary goes away
    job_id = stored_verification_job()
    worker = start_worker_process(tmp_path / "worker.log")
    with running(worker):
        from email_worker.producer.stored_jobs import publish_job

        publish_job(worker_app(), job_id, "email_verification", "high")
        wait_for(lambda: smtp.handler.in_progress, "the worker to be sending")
        refuse_connections(DATABASE)
        try:
            smtp.wait_for(1)
            time.sleep(6)  # longer than the worker keeps trying to record it
        finally:
            accept_connections(DATABASE)
        # As if the outage had outlasted the lease: the reaper runs as soon as it can.
        expire_lease(job_id)
        reap_expired_leases()
        wait_for(lambda: stored(job_id).status == "sent", "the deferred record", timeout=30)
        time.sleep(18)  # past the reaper's grace: its message for the job arrives and finds it sent
    assert len(smtp.received) == 1
    log = (tmp_path / "worker.log").read_text()
    assert "recording a sent email is deferred" in log
    assert '"message": "email failed"' not in log


def test_a_worker_whose_claim_was_taken_over_changes_nothing(
    smtp: SmtpServer,
    redis_client,
    data_hook,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    from email_worker.db import housekeeping, send_path
    from email_worker.db.session import primary_session
    from email_worker.producer.stored_jobs import publish_job

    purge_queues(redis_client)
    inside, release = threading.Event(), threading.Event()

    async def hold_then_refuse(server: Any, session: Any, envelope: Any) -> str:
        inside.set()
        while not release.is_set():
            await asyncio.sleep(0.05)
        return "451 4.3.0 Try again later"

    data_hook(hold_then_refuse)
    job_id = stored_verification_job()
    worker = start_worker_process(tmp_path / "worker.log")
    with running(worker):
        publish_job(worker_app(), job_id, "email_verification", "high")
        assert inside.wait(30)
        # The worker is thought lost: its lease is reaped and another worker claims the job.
        expire_lease(job_id)
        with primary_session() as session:
            housekeeping.reap_expired_leases(session)
        with primary_session() as session:
            claim = send_path.claim_job(session, job_id, lease_seconds=300)
            assert claim is not None
            new_token = claim.claim_token
        release.set()
        wait_for(
            lambda: "claim taken over" in (tmp_path / "worker.log").read_text(),
            "the first worker to give up",
        )
        time.sleep(1.0)
    job = stored(job_id)
    assert (job.status, job.claim_token, job.retry_count) == ("sending", new_token, 1)
    assert sum(queue_length(redis_client, p) for p in ("high", "default", "low")) == 0


def test_one_message_delivered_twice_by_a_foreign_producer_is_one_job_and_one_email(
    smtp: SmtpServer,
    redis_client,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    from celery import Celery

    purge_queues(redis_client)
    foreign = Celery(broker=worker_app().conf.broker_url)  # another codebase, plain Celery
    task_id = str(uuid.uuid4())
    for _ in range(2):  # a redelivery: the same message, the same task id
        foreign.send_task(
            "email_worker.send_password_reset",
            kwargs={"to": "ann@example.com", "data": dict(get_kind("password_reset").sample_data)},
            queue=f"{TEST_ENV['QUEUE_NAME']}.high",
            task_id=task_id,
        )
    worker = start_worker_process(tmp_path / "worker.log")
    with running(worker):
        smtp.wait_for(1, timeout=30)
        wait_for(lambda: queue_length(redis_client, "high") == 0, "both messages to be taken")
        time.sleep(1.5)
    assert [r.message["Message-ID"] for r in smtp.received] == [f"<{task_id}@{DOMAIN}>"]
    assert stored(task_id).status == "sent"


def worker_app() -> Any:
    from email_worker.celeryapp.app import app

    return app


def expire_lease(job_id: uuid.UUID) -> None:
    """Move a job's lease into the past, as the database's clock will see it."""
    engine = sa.create_engine(admin_url(database=DATABASE))
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "UPDATE email_jobs SET lease_expires_at = "
                "timezone('utc', now()) - interval '1 second' WHERE id = :id"
            ),
            {"id": job_id},
        )
    engine.dispose()


def test_a_template_that_runs_out_the_time_limit_fails_at_once_on_the_tracked_path(
    smtp: SmtpServer,
    redis_client,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    from email_worker.db import templates
    from email_worker.db.session import primary_session
    from email_worker.tasks import send_email

    purge_queues(redis_client)
    with primary_session() as session:
        templates.upsert_template(
            session,
            id="endless_notice",
            name="Endless",
            subject="Hello",
            html_template=None,
            text_template="{% for i in range(100000) %}{% for j in range(100000) %}"
            "{% endfor %}{% endfor %}",
        )
    wait_for_replay(DATABASE)  # template lookups read the replica
    result = send_email.apply_async(
        kwargs={"to": "ann@example.com", "template_id": "endless_notice", "tracked": True}
    )
    worker = start_worker_process(tmp_path / "worker.log", env={"PROCESS_TIMEOUT": "1"})
    with running(worker):
        job = wait_for(
            lambda: (j := stored(result.id)) is not None and j.status == "failed" and j,
            "the job to fail",
        )
        time.sleep(1.0)  # a wrongful retry would claim it again now
    assert "PROCESS_TIMEOUT" in (job.last_error or "") and job.retry_count == 0
    assert stored(result.id).status == "failed" and smtp.received == []
