"""The thread that records sent emails in a pool process: batches, flushes, defers."""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from email_worker.db import new_jobs, send_path
from email_worker.db import status as st
from email_worker.db.models import EmailJob, EmailTracking, utcnow
from email_worker.db.sent_recorder import SentRecorder
from email_worker.db.session import primary_session
from email_worker.kinds import get_kind
from tests.conftest import DATABASE, purge_queues
from tests.support.pg import accept_connections, admin_url, refuse_connections
from tests.support.processes import start_worker_process
from tests.support.smtp_server import SmtpServer
from tests.support.waiting import wait_for

pytestmark = pytest.mark.usefixtures("clean_tables")


def claimed_jobs(count: int) -> list[send_path.SentRecord]:
    """``count`` jobs claimed as a worker claims them, and the record each send would make."""
    records = []
    with primary_session() as session:
        for i in range(count):
            job_id, _ = new_jobs.insert_job(
                session,
                job_type="welcome_email",
                recipient_email=f"user{i}@example.com",
                payload={"to": f"user{i}@example.com", "template_id": "welcome_email"},
            )
            records.append(job_id)
    sent = []
    for job_id in records:
        with primary_session() as session:
            claimed = send_path.claim_job(session, job_id, lease_seconds=60)
            assert claimed is not None
            sent.append(
                send_path.SentRecord(
                    job_id, claimed.claim_token, "smtp", f"<{job_id}@x>", None, utcnow()
                )
            )
    return sent


def stored(job_ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple[str, Any]]:
    """Each job's status and the creation time of its tracking row."""
    with primary_session() as session:
        rows = session.execute(
            sa.select(EmailJob.id, EmailJob.status, EmailTracking.created_at)
            .outerjoin(EmailTracking, EmailTracking.job_id == EmailJob.id)
            .where(EmailJob.id.in_(job_ids))
        ).all()
    return {row.id: (row.status, row.created_at) for row in rows}


def never_deferred(record: send_path.SentRecord) -> None:
    raise AssertionError(f"deferred although the primary was up: {record.job_id}")


def test_records_waiting_for_a_write_go_in_together_and_flush_writes_them_all() -> None:
    records = claimed_jobs(21)
    recorder = SentRecorder()
    blocker = sa.create_engine(admin_url(database=DATABASE))
    with blocker.connect() as connection:
        # Another transaction holds the first job's row: the first write waits for it.
        connection.execute(
            sa.text("SELECT 1 FROM email_jobs WHERE id = :id FOR UPDATE"), {"id": records[0].job_id}
        )
        recorder.submit(records[0], never_deferred)
        time.sleep(0.5)
        for record in records[1:]:
            recorder.submit(record, never_deferred)
        connection.rollback()
    assert recorder.flush()
    blocker.dispose()

    found = stored([record.job_id for record in records])
    assert {status for status, _ in found.values()} == {st.SENT}
    first = found[records[0].job_id][1]
    rest = {found[record.job_id][1] for record in records[1:]}
    assert len(rest) == 1 and first not in rest  # one write for the twenty that waited


def test_records_the_primary_does_not_take_are_deferred_each() -> None:
    records = claimed_jobs(3)
    deferred: list[uuid.UUID] = []
    recorder = SentRecorder()
    refuse_connections(DATABASE)
    try:
        for record in records:
            recorder.submit(record, lambda record: deferred.append(record.job_id))
        assert recorder.flush()
    finally:
        accept_connections(DATABASE)
    assert sorted(deferred) == sorted(record.job_id for record in records)
    assert {status for status, _ in stored(deferred).values()} == {st.SENDING}


@pytest.mark.slow
def test_a_pool_process_that_is_replaced_hands_on_its_records_before_it_exits(
    smtp: SmtpServer,
    redis_client,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """The primary is away when the pool process's last task ends: the record is deferred."""
    from email_worker.tasks import send_password_reset

    purge_queues(redis_client)
    smtp.handler.data_delay = 1.0  # the worker is inside DATA when the primary goes away
    data = dict(get_kind("password_reset").sample_data)
    job_id = uuid.UUID(
        send_password_reset.apply_async(kwargs={"to": "ann@example.com", "data": data}).id
    )
    log = tmp_path / "worker.log"
    worker = start_worker_process(log, "--max-tasks-per-child=1", concurrency=1)
    try:
        wait_for(lambda: smtp.handler.in_progress, "the worker to be sending", timeout=60)
        refuse_connections(DATABASE)
        try:
            smtp.wait_for(1, timeout=30)
            time.sleep(5)  # longer than the recorder keeps trying; its process has exited
        finally:
            accept_connections(DATABASE)
        wait_for(
            lambda: stored([job_id])[job_id][0] == st.SENT,
            "the record the pool process handed on before it exited",
        )
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    assert len(smtp.received) == 1
    assert "recording a sent email is deferred" in log.read_text()
