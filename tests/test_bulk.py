"""Bulk sends end to end: a producer, real worker processes, a real SMTP server and SendGrid."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from email_worker.db import bulk as db
from email_worker.db.session import primary_session
from email_worker.errors import InvalidEmailRequest
from email_worker.ops import bulk_sends
from email_worker.producer import bulk_requests
from email_worker.worker import bulk
from tests.conftest import DATABASE, TEST_ENV, purge_queues, queue_length
from tests.support.commands import email_worker
from tests.support.paths import ROOT
from tests.support.pg import wait_for_replay
from tests.support.ports import free_port
from tests.support.processes import running, start_worker_process
from tests.support.smtp_server import SmtpServer
from tests.support.waiting import wait_for_log

WORKER_PROCESSES = 2


def recipients(count: int) -> list[dict[str, Any]]:
    return [
        {
            "to": f"reader{i}@example.com",
            "data": {"title": f"Issue for reader {i}", "message": f"Your reader number is {i}."},
        }
        for i in range(count)
    ]


@pytest.fixture(scope="module")
def worker(
    smtp_server: SmtpServer, redis_client: redis.Redis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[subprocess.Popen[bytes]]:
    """``celery -A email_worker worker`` with two pool processes, sending through SMTP."""
    purge_queues(redis_client)
    log = tmp_path_factory.mktemp("bulk-worker") / "worker.log"
    process = start_worker_process(log, concurrency=WORKER_PROCESSES)
    with running(process):
        wait_for_log(log, "ready")
        yield process


@pytest.fixture
def smtp(smtp_server: SmtpServer, worker: subprocess.Popen[bytes]) -> SmtpServer:
    """The SMTP server with nothing received, its worker running."""
    smtp_server.reset()
    return smtp_server


def wait_until_completed(bulk_id: str, timeout: float = 120.0) -> bulk_sends.BulkSummary:
    """Poll the bulk as operators read it (from the replica) until it is completed."""
    deadline = time.monotonic() + timeout
    seen = "not yet on the replica"
    while time.monotonic() < deadline:
        try:
            summary = bulk_sends.show_bulk(bulk_id)
        except bulk_sends.BulkNotFound:
            time.sleep(0.1)
            continue
        if summary.status == "completed":
            return summary
        seen = f"{summary.status} {summary.counts}"
        time.sleep(0.1)
    raise AssertionError(f"bulk {bulk_id} is {seen}, not completed")


def test_each_recipient_gets_its_own_email_over_one_connection_per_process(
    smtp: SmtpServer,
) -> None:
    from email_worker.tasks import send_bulk

    count = 2500
    smtp.handler.refuse("reader17@example.com", "550 5.1.1 No such user")
    smtp.handler.refuse("reader1234@example.com", "451 4.2.0 Try again later")
    result = send_bulk.apply_async(
        kwargs={"template_id": "generic_notice", "recipients": recipients(count)}
    )
    summary = wait_until_completed(result.id)

    assert summary.counts == {
        "pending": 0,
        "sending": 0,
        "sent": count - 1,
        "refused": 0,
        "failed": 1,
        "retrying": 0,
        "cancelled": 0,
    }
    received = smtp.wait_for(count - 1)
    time.sleep(0.5)  # a duplicate would arrive now
    assert len(smtp.received) == count - 1
    by_position = {}
    for message in received:
        message_id = str(message.message["Message-ID"])
        position = int(message_id.split("@")[0].rsplit("-", 1)[1])
        assert message_id == f"<{result.id}-{position}@mail.example.com>"
        by_position[position] = message
    assert sorted(by_position) == [i for i in range(count) if i != 17]  # none twice
    for position in (0, 1234, count - 1):
        message = by_position[position].message
        assert by_position[position].recipients == [f"reader{position}@example.com"]
        assert message["Subject"] == f"Issue for reader {position}"
        text = message.get_body(("plain",))
        assert text is not None and f"Your reader number is {position}." in text.get_content()
    assert smtp.handler.connections <= WORKER_PROCESSES

    wait_for_replay(DATABASE)
    shown = json.loads(email_worker("bulk", "show", result.id, "--json").stdout)
    assert (shown["status"], shown["template_id"], shown["total"]) == (
        "completed",
        "generic_notice",
        count,
    )
    assert shown["counts"] == summary.counts
    plain = email_worker("bulk", "show", result.id).stdout
    assert "status               completed" in plain and "failed               1" in plain


def test_the_refusal_for_good_is_recorded_masked(smtp: SmtpServer) -> None:
    from email_worker.tasks import send_bulk

    smtp.handler.refuse("reader1@example.com", "550 5.1.1 reader1@example.com unknown")
    result = send_bulk.apply_async(
        kwargs={"template_id": "generic_notice", "recipients": recipients(3), "priority": "high"}
    )
    wait_until_completed(result.id)
    with primary_session() as session:
        failed = session.get(db.EmailBulkRecipient, (uuid.UUID(result.id), 1))
        assert failed is not None and failed.status == "failed"
        assert "550" in (failed.error or "") and "reader1@example.com" not in (failed.error or "")
    assert len(smtp.wait_for(2)) == 2


def test_unsubscribed_and_bounced_addresses_are_left_out_of_a_bulk(smtp: SmtpServer) -> None:
    from email_worker.db.suppressions import add_suppression, remove_suppression
    from email_worker.tasks import send_bulk

    with primary_session() as session:
        add_suppression(session, "Reader1@example.com", "unsubscribe", "marketing", "test")
        add_suppression(session, "reader2@example.com", "hard_bounce", "all", "test")
    try:
        result = send_bulk.apply_async(
            kwargs={"template_id": "generic_notice", "recipients": recipients(5)}
        )
        summary = wait_until_completed(result.id)
        received = smtp.wait_for(3)
        time.sleep(0.5)
    finally:
        with primary_session() as session:  # the other tests send to these readers
            remove_suppression(session, "reader1@example.com")
            remove_suppression(session, "reader2@example.com")
    assert sorted(r.recipients[0] for r in smtp.received) == [
        "reader0@example.com",
        "reader3@example.com",
        "reader4@example.com",
    ]
    # A bulk send is bulk mail: an unsubscribe stops it, as a hard bounce does.
    assert summary.counts["sent"] == 3 and summary.counts["sent"] + summary.counts["failed"] == 5
    assert len(received) == 3


def test_a_cancel_before_the_batches_run_sends_nothing(
    smtp: SmtpServer, redis_client: redis.Redis
) -> None:
    from email_worker.celeryapp.app import app

    bulk_id = uuid.uuid4()
    kwargs = {"template_id": "generic_notice", "recipients": recipients(40)}
    request = bulk_requests.check_bulk(kwargs)
    with primary_session() as session:  # what send_bulk stores before publishing the batches
        db.create_bulk(
            session,
            bulk_id=bulk_id,
            template_id="generic_notice",
            kind="email",
            payload=request.shared_payload(),
            provider=None,
            recipients=request.recipients,
        )
    done = email_worker("bulk", "cancel", str(bulk_id))
    assert "40 recipients will not be sent" in done.stdout
    bulk.store_bulk(app, str(bulk_id), kwargs)  # the batches are published, and run
    deadline = time.monotonic() + 10
    while queue_length(redis_client, "low") and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    assert smtp.received == []
    wait_for_replay(DATABASE)
    summary = bulk_sends.show_bulk(bulk_id)
    assert summary.status == "cancelled" and summary.counts["cancelled"] == 40
    assert summary.counts["sent"] == 0


def test_the_producer_refuses_a_bad_recipient_by_its_index_and_queues_nothing(
    redis_client: redis.Redis,
) -> None:
    from email_worker.tasks import send_bulk

    purge_queues(redis_client)
    bad = recipients(30)
    bad[17]["to"] = "reader17@@example.com"
    with pytest.raises(InvalidEmailRequest, match=r"^recipients\[17\]\.to: not a valid email"):
        send_bulk.apply_async(kwargs={"template_id": "generic_notice", "recipients": bad})
    deep = recipients(30)
    deep[4]["data"] = {"title": "x", "message": "y", "bad key": 1}
    with pytest.raises(InvalidEmailRequest, match=r"^recipients\[4\]\.data\.bad key"):
        send_bulk.apply_async(kwargs={"template_id": "generic_notice", "recipients": deep})
    lacking = recipients(30)
    lacking[9]["data"] = {"title": "Issue for reader 9"}
    with pytest.raises(
        InvalidEmailRequest,
        match=r"^recipients\[9\]\.data: missing variables of template 'generic_notice': message$",
    ):
        send_bulk.apply_async(kwargs={"template_id": "generic_notice", "recipients": lacking})
    with pytest.raises(InvalidEmailRequest, match="unknown template"):
        send_bulk.apply_async(kwargs={"template_id": "no_such_template", "recipients": bad[:1]})
    with pytest.raises(InvalidEmailRequest, match=r"^recipients: at most 100000 recipients"):
        send_bulk.apply_async(
            kwargs={
                "template_id": "generic_notice",
                "recipients": [{"to": "a@example.com"}] * 100_001,
            }
        )
    assert sum(queue_length(redis_client, p) for p in ("high", "default", "low")) == 0


def test_sendgrid_gets_one_request_per_batch_with_each_recipients_values(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    from email_worker.tasks import send_bulk
    from tests.fakes.sendgrid_api import read_records

    port, record = free_port(), tmp_path / "sendgrid.jsonl"
    api = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.sendgrid_api", "--port", str(port)]
        + ["--record", str(record), "--api-key", "SG.test-key"],
        cwd=ROOT,
    )
    queue_name = f"{TEST_ENV['QUEUE_NAME']}-sendgrid"
    worker = start_worker_process(
        tmp_path / "worker.log",
        env={
            "QUEUE_NAME": queue_name,
            "EMAIL_PROVIDER": "sendgrid",
            "SENDGRID_API_KEY": "SG.test-key",
            "SENDGRID_API_URL": f"http://127.0.0.1:{port}",
            "BULK_BATCH_SIZE": "1000",
        },
    )
    with running(worker):
        try:
            wait_for_log(tmp_path / "worker.log", "ready")
            count = 2500
            result = send_bulk.apply_async(
                kwargs={"template_id": "generic_notice", "recipients": recipients(count)},
                queue=f"{queue_name}.low",
            )
            summary = wait_until_completed(result.id)
        finally:
            api.terminate()
            api.wait(timeout=10)
    assert summary.counts["sent"] == count
    requests = [r for r in read_records(record) if r.path == "/v3/mail/send"]
    assert sorted(len(r.body["personalizations"]) for r in requests) == [500, 1000, 1000]
    seen = {}
    for request in requests:
        assert "-ew3t-title-" in request.body["subject"]
        for personalization in request.body["personalizations"]:
            (to,) = personalization["to"]
            seen[to["email"]] = personalization["substitutions"]
            # Each copy carries its own one-click unsubscribe link, none is shared.
            assert personalization["headers"]["List-Unsubscribe"].startswith("<https://")
            assert "List-Unsubscribe" not in request.body.get("headers", {})
    assert len(seen) == count
    assert seen["reader42@example.com"]["-ew3t-title-"] == "Issue for reader 42"
    assert seen["reader42@example.com"]["-ew3h-message-"] == "Your reader number is 42."
    purge_queues(redis_client)
