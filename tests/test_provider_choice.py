"""Which provider sends, seen from outside: real worker processes, the job row, the servers.

Also: a file attached once arrives byte-identical over SMTP, SendGrid and SES.
"""

from __future__ import annotations

import base64
import email
import email.policy
import json
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from email_worker.config import Settings
from email_worker.db.job_queries import get_job
from email_worker.db.session import primary_session
from email_worker.errors import InvalidEmailRequest
from email_worker.kinds import GENERIC
from email_worker.mime.messages import OutgoingEmail, Sender, build_message
from email_worker.producer.validation import validate_request
from email_worker.providers.failover import send_through
from email_worker.providers.sendgrid import SendGridProvider
from email_worker.providers.ses import SesProvider
from email_worker.providers.smtp import SmtpProvider
from email_worker.rendering.renderer import render_inline
from tests.conftest import purge_queues, queue_key, queue_length
from tests.fakes.sendgrid_api import FakeSendGrid
from tests.support.ports import free_port
from tests.support.processes import running, start_worker_process
from tests.support.raw_messages import foreign_app
from tests.support.smtp_server import SmtpServer
from tests.support.waiting import wait_for_log

FILE = bytes(range(256)) * 40  # every byte value: nothing may be re-encoded on the way
ATTACHMENT = {
    "filename": "receipt.pdf",
    "content": base64.b64encode(FILE).decode(),
    "content_type": "application/pdf",
}


def wait_for_job(job_id: str, status: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with primary_session() as session:
            job = get_job(session, uuid.UUID(job_id))
            if job is not None and job.status == status:
                session.expunge(job)
                return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not become {status}")


def test_a_provider_that_cannot_be_reached_falls_back_and_the_job_names_the_one_that_sent(
    smtp: SmtpServer, redis_client: redis.Redis, clean_tables: None, tmp_path: Path
) -> None:
    from email_worker.tasks import send_email

    purge_queues(redis_client)
    env = {
        "EMAIL_PROVIDER": "sendgrid",
        "SENDGRID_API_KEY": "SG.test-key",
        "SENDGRID_API_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "EMAIL_PROVIDER_FALLBACKS": "smtp",
    }
    log = tmp_path / "worker.log"
    with running(start_worker_process(log, env=env, concurrency=1)):
        wait_for_log(log, "ready")
        result = send_email.apply_async(
            kwargs={"to": "ann@example.com", "subject": "Receipt", "text": "Paid.", "tracked": True}
        )
        job = wait_for_job(result.id, "sent")
        (received,) = smtp.wait_for(1)
        text = log.read_text()
    assert job.provider == "smtp"
    assert job.recipient_results == {"accepted": 1, "refused": {}}
    assert received.recipients == ["ann@example.com"]
    assert "provider failed for now; trying the next one" in text
    assert "sent through a fallback provider" in text


def test_staging_sends_only_to_allowed_recipients_and_holds_the_rest(
    smtp: SmtpServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    from email_worker.tasks import send_email

    purge_queues(redis_client)
    outbox = tmp_path / "outbox"
    env = {
        "DELIVERY_MODE": "allowlist",
        "ALLOWED_RECIPIENTS": "@team.example.com",
        "OUTBOX_DIR": str(outbox),
    }
    log = tmp_path / "worker.log"
    with running(start_worker_process(log, env=env, concurrency=1)):
        wait_for_log(log, "ready")
        send_email.apply_async(
            kwargs={
                "to": ["qa@team.example.com", "customer@example.org"],
                "bcc": "auditor@example.net",
                "subject": "Booking confirmed",
                "text": "See you there.",
            }
        )
        (received,) = smtp.wait_for(1)
        wait_for_log(log, "recipients held in the outbox by DELIVERY_MODE")
    assert received.recipients == ["qa@team.example.com"]
    (held,) = outbox.glob("*.eml")
    assert email.message_from_bytes(held.read_bytes())["Subject"] == "Booking confirmed"


def attached(key: str) -> OutgoingEmail:
    request = validate_request(
        GENERIC,
        {
            "to": "ann@example.com",
            "subject": "Receipt",
            "text": "Attached.",
            "attachments": [ATTACHMENT],
        },
        template_exists=lambda t: True,
    )
    content = render_inline("Receipt", None, "Attached.")
    return build_message(
        request, content, sender=Sender("noreply@mail.example.com", ""), message_key=key
    )


def the_file(raw: bytes | str) -> bytes:
    parsed = email.message_from_bytes(
        raw if isinstance(raw, bytes) else raw.encode(), policy=email.policy.default
    )
    (part,) = list(parsed.iter_attachments())  # type: ignore[attr-defined]
    assert part.get_filename() == "receipt.pdf"
    assert part.get_content_type() == "application/pdf"
    return bytes(part.get_payload(decode=True))


@pytest.fixture
def settings() -> Settings:
    return Settings(redis_host="127.0.0.1", queue_name=f"attach-{uuid.uuid4().hex[:8]}")


def test_an_attachment_arrives_identical_over_smtp(smtp: SmtpServer, settings: Settings) -> None:
    provider = SmtpProvider("127.0.0.1", smtp.port, security="none", timeout=5)
    try:
        send_through(attached("a1"), ("smtp",), settings, provider_for=lambda _: provider)
    finally:
        provider.close()
    (received,) = smtp.wait_for(1)
    assert the_file(received.raw) == FILE


def test_an_attachment_arrives_identical_over_sendgrid(settings: Settings) -> None:
    with FakeSendGrid() as api:
        provider = SendGridProvider("SG.test-key", api_url=api.url)
        send_through(attached("a2"), ("sendgrid",), settings, provider_for=lambda _: provider)
        (request,) = api.requests
    (sent,) = request.body["attachments"]
    assert (sent["filename"], sent["type"]) == ("receipt.pdf", "application/pdf")
    assert base64.b64decode(sent["content"]) == FILE


def test_an_attachment_arrives_identical_over_ses(settings: Settings) -> None:
    with mock_aws():
        boto3.client(
            "sesv2", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="y"
        ).create_email_identity(EmailIdentity="mail.example.com")
        provider = SesProvider("eu-west-1", access_key_id="AKIDEXAMPLE", secret_access_key="s")
        send_through(attached("a3"), ("ses",), settings, provider_for=lambda _: provider)
        (sent,) = ses_backends[DEFAULT_ACCOUNT_ID]["eu-west-1"].sent_messages
    assert the_file(sent.raw_data) == FILE


SECRET_TEXT = "Your reset code is 991277."


def log_entries(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def test_a_producer_cannot_choose_a_provider_that_keeps_mail_on_the_host_in_live_mode(
    redis_client: redis.Redis,
) -> None:
    from email_worker.tasks import send_email

    purge_queues(redis_client)
    for provider in ("console", "outbox"):
        with pytest.raises(InvalidEmailRequest) as caught:
            send_email.delay(
                to="ann@example.com", subject="Reset", text=SECRET_TEXT, provider=provider
            )
        assert caught.value.field == "provider"
        assert "only when DELIVERY_MODE is not live" in caught.value.problem
    assert sum(queue_length(redis_client, p) for p in ("high", "default", "low")) == 0


def test_a_live_worker_fails_only_the_email_that_names_a_provider_it_may_not_use(
    smtp: SmtpServer, redis_client: redis.Redis, clean_tables: None, tmp_path: Path
) -> None:
    from email_worker.config import get_settings
    from email_worker.tasks import send_email

    purge_queues(redis_client)
    outbox = Path(get_settings().outbox_dir)
    held_before = set(outbox.glob("*.eml")) if outbox.exists() else set()
    # A producer holds no provider settings, so only the worker can tell ses is not set up.
    unconfigured = send_email.apply_async(
        kwargs={
            "to": "ann@example.com",
            "subject": "Receipt",
            "text": "Paid.",
            "tracked": True,
            "provider": "ses",
        }
    )
    other_service = foreign_app()  # publishes without this package: nothing checked it
    for provider in ("console", "outbox"):
        other_service.send_task(
            "email_worker.send_email",
            kwargs={
                "to": "bob@example.com",
                "subject": "Reset",
                "text": SECRET_TEXT,
                "provider": provider,
            },
            queue=queue_key("default"),
        )
    log = tmp_path / "worker.log"
    with running(start_worker_process(log, concurrency=1)):
        job = wait_for_job(unconfigured.id, "failed")
        deadline = time.monotonic() + 30
        while log.read_text().count('"email failed"') < 3:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        send_email.delay(to="cy@example.com", subject="Still sending", text="Yes.")
        (received,) = smtp.wait_for(1)
    assert received.recipients == ["cy@example.com"]
    assert "'ses' is not configured here" in job.last_error
    failures = [e for e in log_entries(log) if e["message"] == "email failed"]
    reasons = sorted(e["reason"] for e in failures)
    assert [r.partition(" ")[0] for r in reasons] == ["provider:"] * 3
    assert [r.split("'")[1] for r in reasons] == ["console", "outbox", "ses"]
    assert {e["level"] for e in failures} == {"error"}
    assert not [e for e in log_entries(log) if e["level"] == "critical"]
    assert "991277" not in log.read_text()
    assert (set(outbox.glob("*.eml")) if outbox.exists() else set()) == held_before


def test_the_console_provider_never_writes_a_body_into_a_collected_log(
    smtp: SmtpServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    purge_queues(redis_client)
    env = {"DELIVERY_MODE": "allowlist", "ALLOWED_RECIPIENTS": "@example.com"}
    foreign_app().send_task(
        "email_worker.send_email",
        kwargs={
            "to": "ann@example.com",
            "subject": "Reset",
            "text": SECRET_TEXT,
            "provider": "console",
        },
        queue=queue_key("default"),
    )
    log = tmp_path / "worker.log"  # the worker's stdout and stderr: what a collector reads
    with running(start_worker_process(log, env=env, concurrency=1)):
        text = wait_for_log(log, '"email sent"')
    (shown,) = [
        e for e in log_entries(log) if e["message"] == "console provider: email not delivered"
    ]
    assert shown["to"] == "a***@example.com" and shown["bytes"] > 0
    assert "991277" not in text and "Reset" not in text and "ann@example.com" not in text
    assert smtp.received == []
