"""End to end through Redis and a real worker to a real SMTP server."""

from __future__ import annotations

import logging
import time

import pytest

from email_worker.errors import (
    InvalidEmailRequest,
    PermanentProviderError,
    TemplateRenderError,
    TransientProviderError,
)
from email_worker.kinds import KINDS
from tests.support.smtp_server import SmtpServer

pytestmark = pytest.mark.usefixtures("worker")


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_each_kind_arrives_with_headers_both_parts_and_escaped_html(
    smtp: SmtpServer,
    kind,  # type: ignore[no-untyped-def]
) -> None:
    from email_worker.tasks import task_for

    data = {**dict(kind.sample_data), "user_name": "Ann <script>alert(1)</script>"}
    result = task_for(kind.name).apply_async(kwargs={"to": "ann@example.com", "data": data})
    (received,) = smtp.wait_for(1)
    message = received.message
    assert received.recipients == ["ann@example.com"]
    assert message["From"] == "Example Bookings <noreply@mail.example.com>"
    assert message["To"] == "ann@example.com"
    assert message["Subject"] and message["Date"]
    assert message["Message-ID"] == f"<{result.id}@mail.example.com>"
    text, html = message.iter_parts()
    assert text.get_content_type() == "text/plain" and html.get_content_type() == "text/html"
    assert "Ann <script>alert(1)</script>" in text.get_content()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html.get_content()
    assert "<script>" not in html.get_content()


def test_generic_send_email_with_inline_content(smtp: SmtpServer) -> None:
    from email_worker.tasks import send_email

    send_email.delay(
        to=["ann@example.com"],
        cc="bob@example.com",
        bcc="audit@example.com",
        subject="Invoice ready",
        html="<p>Your invoice is ready.</p>",
        reply_to="billing@example.com",
        headers={"X-Invoice": "INV-7"},
        from_email="billing@mail.example.com",
        from_name="Billing",
    )
    (received,) = smtp.wait_for(1)
    assert sorted(received.recipients) == [
        "ann@example.com",
        "audit@example.com",
        "bob@example.com",
    ]
    message = received.message
    assert message["Bcc"] is None and message["Cc"] == "bob@example.com"
    assert message["From"] == "Billing <billing@mail.example.com>"
    assert message["X-Invoice"] == "INV-7"
    assert message.get_body(("plain",)).get_content().strip() == "Your invoice is ready."


def test_a_451_is_retried_and_delivered_exactly_once(smtp: SmtpServer) -> None:
    from email_worker.tasks import send_welcome_email

    smtp.handler.reply_next("DATA", "451 4.3.0 Mailbox temporarily unavailable")
    result = send_welcome_email.apply_async(
        kwargs={"to": "ann@example.com", "data": dict(KINDS[2].sample_data)},
        ignore_result=False,
    )
    assert result.get(timeout=20)["provider"] == "smtp"
    time.sleep(1.5)  # long enough for a wrongful second retry to show up
    assert smtp.handler.data_attempts == 2
    assert len(smtp.by_message_id(f"<{result.id}@mail.example.com>")) == 1
    assert len(smtp.received) == 1


def test_a_550_fails_at_once_without_retry(smtp: SmtpServer, caplog) -> None:  # type: ignore[no-untyped-def]
    from email_worker.tasks import send_welcome_email

    smtp.handler.reply_next("RCPT", "550 5.1.1 <ann@example.com>: user unknown", times=5)
    with caplog.at_level(logging.ERROR, logger="email_worker.tasks"):
        result = send_welcome_email.apply_async(
            kwargs={"to": "ann@example.com", "data": dict(KINDS[2].sample_data)},
            ignore_result=False,
        )
        with pytest.raises(PermanentProviderError, match="550"):
            result.get(timeout=20)
        time.sleep(1.5)
    assert smtp.handler.rcpt_attempts == 1 and smtp.received == []
    failures = [r for r in caplog.records if r.getMessage() == "email failed"]
    assert len(failures) == 1
    assert "550" in failures[0].reason and "ann@example.com" not in failures[0].reason


def test_transient_failures_stop_after_max_retries(smtp: SmtpServer) -> None:
    from email_worker.tasks import send_welcome_email

    smtp.handler.reply_next("DATA", "421 4.7.0 Try later", times=10)
    result = send_welcome_email.apply_async(
        kwargs={"to": "ann@example.com", "data": dict(KINDS[2].sample_data)},
        ignore_result=False,
    )
    with pytest.raises(Exception, match="421"):
        result.get(timeout=30)
    assert smtp.handler.data_attempts == 1 + 3  # MAX_RETRIES defaults to 3
    assert smtp.received == []


def test_a_missing_variable_fails_naming_it(smtp: SmtpServer, celery_app) -> None:  # type: ignore[no-untyped-def]
    from celery import Celery

    # A producer without this package (the producer here refuses such a payload).
    foreign = Celery(broker=celery_app.conf.broker_url, backend=celery_app.conf.result_backend)
    result = foreign.send_task(
        "email_worker.send_email_verification",
        kwargs={"to": "ann@example.com", "data": {"user_name": "Ann"}},
        queue=celery_app.conf.task_default_queue,
        ignore_result=False,
    )
    with pytest.raises(Exception, match="data: missing variables .*: expires_in_hours, verif"):
        result.get(timeout=20)
    assert smtp.received == []


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (TemplateRenderError("template 'x' (body.html): missing variable: 'y' is undefined"), True),
        (InvalidEmailRequest("data", "missing variables of template 'x': y"), True),
        (PermanentProviderError("550 no such user", "smtp", 550), True),
        (TransientProviderError("421 try again later", "smtp", 421), True),
        (KeyError("a bug in the worker's own code"), False),
    ],
    ids=["template", "request", "provider", "retries spent", "bug"],
)
def test_celery_logs_a_traceback_for_a_bug_and_not_for_a_send_that_cannot_succeed(
    error: Exception, expected: bool
) -> None:
    from billiard.einfo import ExceptionInfo
    from celery.app.trace import get_log_policy

    from email_worker.tasks import send_email

    try:
        raise error
    except Exception:
        info = ExceptionInfo()
    policy = get_log_policy(send_email, info, error)
    assert policy.description == ("raised expected" if expected else "raised unexpected")
    assert bool(policy.traceback) is not expected


def test_the_worker_revalidates_payloads_it_did_not_check(smtp: SmtpServer, celery_app) -> None:  # type: ignore[no-untyped-def]
    from celery import Celery

    # A producer in another codebase publishes with plain Celery: no validation on its side.
    foreign = Celery(broker=celery_app.conf.broker_url, backend=celery_app.conf.result_backend)
    result = foreign.send_task(
        "email_worker.send_email",
        kwargs={"to": "ann@example.com", "subject": "Hi\r\nBcc: eve@evil.example", "text": "x"},
        queue=celery_app.conf.task_default_queue,
        ignore_result=False,
    )
    with pytest.raises(Exception, match="subject: cannot contain CR"):
        result.get(timeout=20)
    assert smtp.received == []


def test_a_short_countdown_is_honoured(smtp: SmtpServer) -> None:
    from email_worker.tasks import send_email

    started = time.monotonic()
    send_email.apply_async(
        kwargs={"to": "ann@example.com", "subject": "Later", "text": "x"}, countdown=2
    )
    smtp.wait_for(1)
    assert time.monotonic() - started >= 1.9


def test_a_recipient_refused_for_now_gets_the_email_on_a_retry_and_no_one_twice(
    smtp: SmtpServer,
) -> None:
    from email_worker.tasks import send_email

    smtp.handler.refuse("cat@example.com", "451 4.7.1 Greylisted, try again later")
    smtp.handler.refuse("dan@example.com", "550 5.1.1 No such user")
    result = send_email.apply_async(
        kwargs={
            "to": "ann@example.com",
            "cc": ["cat@example.com", "dan@example.com"],
            "subject": "Minutes",
            "text": "x",
        },
        ignore_result=False,
    )
    assert result.get(timeout=20)["provider"] == "smtp"
    first, second = smtp.wait_for(2)
    assert first.recipients == ["ann@example.com"]
    assert second.recipients == ["cat@example.com"]  # only the one refused for now
    assert first.message["Message-ID"] == second.message["Message-ID"]
    assert second.message["Cc"] == "cat@example.com, dan@example.com"  # headers unchanged
    time.sleep(1.0)
    assert len(smtp.received) == 2
