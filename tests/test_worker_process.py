"""`celery -A email_worker worker` as operators run it: a real process, real signals."""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import purge_queues, queue_length
from tests.support.jobs import stored_verification_job
from tests.support.processes import start_worker_process
from tests.support.smtp_server import SmtpServer


@pytest.mark.slow
def test_sigterm_during_a_burst_finishes_sends_in_progress_and_loses_none(
    smtp: SmtpServer,
    redis_client,
    celery_app,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    from email_worker.tasks import send_email

    purge_queues(redis_client)
    smtp.handler.data_delay = 0.4  # each delivery takes a while, so some are mid-send at SIGTERM
    burst = [
        send_email.delay(to="ann@example.com", subject=f"Burst {i}", text=f"Message {i}").id
        for i in range(12)
    ]
    first = start_worker_process(tmp_path / "first.log")
    try:
        smtp.wait_for(2, timeout=60)
        while smtp.handler.in_progress == 0:
            time.sleep(0.01)
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 0
    finally:
        if first.poll() is None:
            first.kill()
    assert smtp.handler.in_progress == 0  # nothing was cut off mid-transaction
    delivered_before_restart = len(smtp.received)
    assert delivered_before_restart < len(burst)  # the shutdown really interrupted the burst

    second = start_worker_process(tmp_path / "second.log")
    try:
        smtp.wait_for(len(burst), timeout=60)
        time.sleep(1.0)  # a duplicate would arrive now
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=60)
    delivered = Counter(r.message["Message-ID"] for r in smtp.received)
    assert delivered == Counter({f"<{task_id}@mail.example.com>": 1 for task_id in burst})
    log = (tmp_path / "first.log").read_text()
    assert "ann@example.com" not in log + (tmp_path / "second.log").read_text()
    assert '"message": "email sent"' in log


@pytest.mark.slow
def test_retries_log_no_personal_data(
    smtp: SmtpServer,
    redis_client,
    celery_app,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    from email_worker.tasks import send_email

    purge_queues(redis_client)
    smtp.handler.reply_next("DATA", "451 4.3.0 Try later for <ann.secret@example.com>")
    send_email.delay(
        to="ann.secret@example.com",
        subject="Private subject line",
        text="x",
        from_name="Ann's Bank",
        metadata={"account": "NL91ABNA0417164300"},
    )
    worker = start_worker_process(tmp_path / "worker.log")
    try:
        smtp.wait_for(1, timeout=60)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    log = (tmp_path / "worker.log").read_text()
    assert "retry" in log.lower() and '"message": "email sent"' in log
    for secret in (
        "ann.secret@example.com",
        "Private subject line",
        "Ann's Bank",
        "NL91ABNA0417164300",
    ):
        assert secret not in log


@pytest.mark.slow
@pytest.mark.usefixtures("clean_tables")
def test_two_worker_processes_given_the_same_job_send_it_once(
    smtp: SmtpServer,
    redis_client,
    celery_app,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    from email_worker.db import job_queries
    from email_worker.db.session import primary_session
    from email_worker.producer.stored_jobs import publish_job

    purge_queues(redis_client)
    smtp.handler.data_delay = 0.5  # both workers hold a message for the job at once
    job_id = stored_verification_job()
    for _ in range(4):  # a redelivery, a relay and two duplicates
        publish_job(celery_app, job_id, "email_verification", "high")
    workers = [start_worker_process(tmp_path / f"worker{i}.log") for i in range(2)]
    try:
        smtp.wait_for(1, timeout=60)
        deadline = time.monotonic() + 30
        while queue_length(redis_client, "high") and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.5)  # the other messages have been taken; a duplicate would arrive now
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=60)
    assert len(smtp.received) == 1
    skipped = sum(
        (tmp_path / f"worker{i}.log").read_text().count("job not claimable") for i in range(2)
    )
    assert skipped == 3
    with primary_session() as session:
        stored = job_queries.get_job(session, job_id)
        assert stored is not None and stored.status == "sent"
