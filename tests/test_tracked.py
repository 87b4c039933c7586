"""Tracked and scheduled sends: the row comes first, survives a broker outage, and is sent once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from email_worker.kinds import get_kind
from email_worker.ops import operations
from tests.conftest import DATABASE, TEST_ENV, purge_queues, queue_length
from tests.support.commands import email_worker
from tests.support.jobs import stored_verification_job, wait_for_status
from tests.support.paths import ROOT
from tests.support.pg import wait_for_replay
from tests.support.processes import start_beat_process
from tests.support.smtp_server import SmtpServer

VERIFICATION = dict(get_kind("email_verification").sample_data)
pytestmark = pytest.mark.usefixtures("worker", "clean_tables")


def test_a_tracked_kind_is_stored_then_sent_and_recorded(smtp: SmtpServer) -> None:
    from email_worker.tasks import send_email_verification

    result = send_email_verification.apply_async(
        kwargs={"to": "ann@example.com", "data": VERIFICATION}
    )
    job = wait_for_status(result.id, "sent")
    (received,) = smtp.wait_for(1)
    assert received.message["Message-ID"] == f"<{result.id}@mail.example.com>"
    assert job.job_type == "email_verification" and job.recipient_email == "ann@example.com"
    assert job.provider == "smtp" and job.provider_message_id == received.message["Message-ID"]
    assert job.template_id == "email_verification" and job.retry_count == 0
    assert [t.status for t in job.tracking] == ["sent"]
    assert job.tracking[0].sent_at is not None


def test_tracked_true_on_the_generic_task_stores_a_row(smtp: SmtpServer) -> None:
    from email_worker.tasks import send_email

    result = send_email.delay(
        to="ann@example.com", subject="Invoice", text="x", tracked=True, kind="invoice"
    )
    job = wait_for_status(result.id, "sent")
    assert job.job_type == "invoice" and len(smtp.wait_for(1)) == 1


def test_a_retry_counts_on_the_row_and_keeps_the_error(smtp: SmtpServer) -> None:
    from email_worker.tasks import send_payment_receipt

    smtp.handler.reply_next("DATA", "451 4.3.0 Try again later")
    result = send_payment_receipt.delay(
        to="ann@example.com", data=dict(get_kind("payment_receipt").sample_data)
    )
    job = wait_for_status(result.id, "sent")
    assert job.retry_count == 1 and "451" in (job.last_error or "")
    assert len(smtp.wait_for(1)) == 1


def test_a_job_whose_data_lacks_a_variable_is_failed_naming_it(
    smtp: SmtpServer,
    celery_app,  # type: ignore[no-untyped-def]
) -> None:
    from email_worker.producer.stored_jobs import publish_job

    # Stored before its template needed the variable: the producer refuses such data now.
    job_id = stored_verification_job(data={"user_name": "Ann", "expires_in_hours": 24})
    publish_job(celery_app, job_id, "email_verification", "high")
    job = wait_for_status(str(job_id), "failed")
    assert "verification_url" in (job.last_error or "")
    assert job.retry_count == 0 and smtp.received == []
    assert [t.status for t in job.tracking] == ["failed"]


def test_the_same_job_given_twice_is_sent_once(smtp: SmtpServer, celery_app) -> None:  # type: ignore[no-untyped-def]
    from email_worker.producer.stored_jobs import publish_job

    smtp.handler.data_delay = 0.3  # both messages are in the worker's hands together
    job_id = stored_verification_job()
    for _ in range(3):
        publish_job(celery_app, job_id, "email_verification", "high")
    wait_for_status(str(job_id), "sent")
    time.sleep(1.0)
    assert len(smtp.received) == 1


def test_idempotency_key_gives_one_job_and_one_email(smtp: SmtpServer) -> None:
    from email_worker.tasks import send_password_reset

    kwargs = {
        "to": "ann@example.com",
        "data": dict(get_kind("password_reset").sample_data),
        "idempotency_key": f"reset-{uuid.uuid4()}",
    }
    first = send_password_reset.apply_async(kwargs=kwargs)
    second = send_password_reset.apply_async(kwargs=kwargs)
    assert first.id == second.id
    wait_for_status(first.id, "sent")
    time.sleep(1.0)
    assert len(smtp.received) == 1
    assert len(operations.list_jobs(kind="password_reset")) == 1


def test_a_tracked_job_survives_a_broker_that_is_down(smtp: SmtpServer, redis_client) -> None:  # type: ignore[no-untyped-def]
    from email_worker.worker.periodic import relay_stranded_jobs

    purge_queues(redis_client)
    job_id = _produce_in_subprocess({"REDIS_PORT": "1"})  # nothing listens on port 1
    wait_for_replay(DATABASE)
    assert operations.get_job(job_id).status == "pending"
    assert sum(queue_length(redis_client, p) for p in ("high", "default", "low")) == 0
    time.sleep(float(TEST_ENV["STRANDED_AFTER"]) + 0.2)
    assert relay_stranded_jobs() == 1  # beat's relay, once the broker is reachable
    wait_for_status(job_id, "sent")
    assert len(smtp.wait_for(1)) == 1


def test_with_the_primary_down_the_producer_gets_a_clear_error_and_nothing_is_queued(
    redis_client,  # type: ignore[no-untyped-def]
) -> None:
    purge_queues(redis_client)
    done = _run_producer({"DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/x"})
    assert done.returncode == 1
    assert "DatabaseUnavailable" in done.stderr and "nothing was queued" in done.stderr
    assert sum(queue_length(redis_client, p) for p in ("high", "default", "low")) == 0


def test_a_scheduled_job_is_sent_once_at_its_time_by_two_concurrent_beats(
    smtp: SmtpServer, tmp_path: Path
) -> None:
    from email_worker.tasks import send_email

    delay = float(TEST_ENV["SCHEDULE_THRESHOLD"]) + 2
    due = [
        send_email.apply_async(
            kwargs={"to": "ann@example.com", "subject": f"Later {i}", "text": "x"}, countdown=delay
        ).id
        for i in range(5)
    ]
    asked_at = time.monotonic()
    wait_for_replay(DATABASE)
    assert {operations.get_job(j).status for j in due} == {"scheduled"}
    beats = [start_beat_process(tmp_path / f"beat{i}") for i in range(2)]
    try:
        smtp.wait_for(len(due), timeout=30)
        arrived = time.monotonic() - asked_at
        time.sleep(1.5)  # both beats keep dispatching; a duplicate would show now
    finally:
        for beat in beats:
            beat.send_signal(signal.SIGTERM)
        for beat in beats:
            beat.wait(timeout=30)
    assert arrived >= delay - 0.5
    subjects = sorted(str(r.message["Subject"]) for r in smtp.received)
    assert subjects == [f"Later {i}" for i in range(5)]
    wait_for_replay(DATABASE)
    assert {operations.get_job(j).status for j in due} == {"sent"}


def test_a_cancelled_scheduled_job_is_never_sent(smtp: SmtpServer) -> None:
    from email_worker.tasks import send_email
    from email_worker.worker.periodic import dispatch_due_jobs

    result = send_email.apply_async(
        kwargs={"to": "ann@example.com", "subject": "Cancel me", "text": "x", "tracked": True},
        countdown=float(TEST_ENV["SCHEDULE_THRESHOLD"]) + 0.5,
    )
    assert operations.cancel_job(result.id) is True
    time.sleep(float(TEST_ENV["SCHEDULE_THRESHOLD"]) + 1)
    assert dispatch_due_jobs() == 0
    time.sleep(0.5)
    wait_for_replay(DATABASE)
    assert smtp.received == [] and operations.get_job(result.id).status == "cancelled"
    assert operations.cancel_job(result.id) is False


def test_a_lost_worker_lease_is_sent_again(smtp: SmtpServer) -> None:
    from email_worker.db import send_path
    from email_worker.db.session import primary_session
    from email_worker.worker.periodic import reap_expired_leases

    job_id = stored_verification_job()
    with primary_session() as session:  # a worker claimed it, then died
        assert send_path.claim_job(session, job_id, lease_seconds=0.1) is not None
    time.sleep(0.3)
    assert reap_expired_leases() == {"requeued": 1, "failed": 0}
    job = wait_for_status(str(job_id), "sent")
    assert job.retry_count == 1 and len(smtp.wait_for(1)) == 1


def test_jobs_commands(smtp: SmtpServer) -> None:
    from email_worker.tasks import send_email_verification

    result = send_email_verification.delay(to="ann@example.com", data=VERIFICATION)
    wait_for_status(result.id, "sent")
    listing = email_worker("jobs", "list", "--status", "sent", "--kind", "email_verification")
    assert result.id in listing.stdout
    shown = email_worker("jobs", "show", result.id)
    assert "status               sent" in shown.stdout and "tracking" in shown.stdout
    refused = email_worker("jobs", "cancel", result.id, check=False)
    assert refused.returncode == 1 and "not pending or scheduled" in refused.stderr
    assert email_worker("jobs", "delete", result.id).returncode == 0
    wait_for_replay(DATABASE)
    with pytest.raises(operations.JobNotFound):
        operations.get_job(result.id)


PRODUCER = """
import sys
from email_worker.tasks import send_email_verification
result = send_email_verification.apply_async(kwargs={"to": "ann@example.com", "data": %s})
print(result.id)
"""


def _run_producer(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PRODUCER % json.dumps(VERIFICATION)],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _produce_in_subprocess(env: dict[str, str]) -> str:
    done = _run_producer(env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_a_tracked_partial_delivery_retries_only_the_refused_recipient(smtp: SmtpServer) -> None:
    from email_worker.tasks import send_payment_receipt

    smtp.handler.refuse("accounts@example.com", "452 4.2.2 Mailbox full")
    result = send_payment_receipt.delay(
        to="ann@example.com",
        cc="accounts@example.com",
        data=dict(get_kind("payment_receipt").sample_data),
    )
    job = wait_for_status(result.id, "sent")
    first, second = smtp.wait_for(2)
    assert (first.recipients, second.recipients) == (["ann@example.com"], ["accounts@example.com"])
    assert job.retry_count == 1 and "452" in (job.last_error or "")


def test_a_tracked_kind_published_without_this_package_is_tracked_all_the_same(
    smtp: SmtpServer,
    celery_app,  # type: ignore[no-untyped-def]
) -> None:
    from celery import Celery

    foreign = Celery(broker=celery_app.conf.broker_url)  # another codebase, plain Celery
    key = f"reset-{uuid.uuid4()}"
    kwargs = {
        "to": "ann@example.com",
        "data": dict(get_kind("password_reset").sample_data),
        "idempotency_key": key,
    }
    for _ in range(2):
        foreign.send_task(
            "email_worker.send_password_reset",
            kwargs=kwargs,
            queue=f"{TEST_ENV['QUEUE_NAME']}.high",
        )
    (received,) = smtp.wait_for(1)
    time.sleep(1.0)
    assert len(smtp.received) == 1
    wait_for_replay(DATABASE)
    (job,) = operations.list_jobs(kind="password_reset")
    assert job.status == "sent" and received.message["Message-ID"] == f"<{job.id}@mail.example.com>"
