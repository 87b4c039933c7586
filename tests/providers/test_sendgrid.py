"""SendGrid delivery: the real ``sendgrid`` client against a local fake of the v3 API."""

from __future__ import annotations

import base64
import dataclasses
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from email_worker.errors import (
    AccountProviderError,
    PermanentProviderError,
    RateLimitedError,
    TransientProviderError,
)
from email_worker.kinds import GENERIC
from email_worker.mime.messages import Attachment, Envelope, OutgoingEmail, Sender, build_message
from email_worker.producer.validation import validate_request
from email_worker.providers.sendgrid import MergedBatch, MergedRecipient, SendGridProvider
from email_worker.rendering.renderer import render_inline
from tests.fakes.sendgrid_api import FakeSendGrid, errors_body, read_records
from tests.support.ports import free_port

API_KEY = "SG.test-key.0123456789abcdefghijklmnopqrstuvwxyz"
PDF = b"%PDF-1.4\n\x00\x01\x02\xff\xfe binary \r\n bytes\n"


def outgoing(**fields: Any) -> OutgoingEmail:
    request = validate_request(
        GENERIC,
        {"to": "ann@example.com", "subject": "Hello", "text": "Body", **fields},
        template_exists=lambda t: True,
    )
    return build_message(
        request,
        render_inline(request.subject or "", request.html, request.text),
        sender=Sender("noreply@mail.example.com", "Example"),
        message_key="job-42",
    )


def narrowed(email: OutgoingEmail, *recipients: str) -> OutgoingEmail:
    """The message as a retry after a partial delivery sends it."""
    return dataclasses.replace(email, envelope=Envelope(email.envelope.sender, tuple(recipients)))


@pytest.fixture
def api() -> Iterator[FakeSendGrid]:
    with FakeSendGrid(api_key=API_KEY) as fake:
        yield fake


@pytest.fixture
def provider(api: FakeSendGrid) -> Iterator[SendGridProvider]:
    provider = SendGridProvider(API_KEY, api_url=api.url, timeout=2)
    yield provider
    provider.close()


def test_sends_every_part_of_the_message(api: FakeSendGrid, provider: SendGridProvider) -> None:
    email = outgoing(
        to=["ann@example.com", "bob@example.com"],
        cc="cat@example.com",
        bcc="dan@example.com",
        reply_to=["help@example.com", "sales@example.com"],
        from_name="Example Bookings",
        subject="Your booking",
        text="Plain body",
        html="<p>HTML body</p>",
        headers={"X-Campaign": "spring"},
        kind="invoice_reminder",
    )
    invoice = Attachment("invoice.pdf", PDF, "application/pdf")
    assert email.parts is not None
    email = dataclasses.replace(
        email, parts=dataclasses.replace(email.parts, attachments=(invoice,))
    )
    api.reply(202, headers={"X-Message-Id": "sg-abc123"})

    result = provider.send(email)

    assert result.message_id == "sg-abc123"
    assert result.accepted == email.envelope.recipients
    (request,) = api.requests
    assert request.path == "/v3/mail/send"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    body = request.body
    assert body["from"] == {"email": "noreply@mail.example.com", "name": "Example Bookings"}
    assert body["personalizations"] == [
        {
            "to": [{"email": "ann@example.com"}, {"email": "bob@example.com"}],
            "cc": [{"email": "cat@example.com"}],
            "bcc": [{"email": "dan@example.com"}],
        }
    ]
    assert body["reply_to_list"] == [{"email": "help@example.com"}, {"email": "sales@example.com"}]
    assert "reply_to" not in body
    assert body["subject"] == "Your booking"
    assert body["content"] == [
        {"type": "text/plain", "value": "Plain body"},
        {"type": "text/html", "value": "<p>HTML body</p>"},
    ]
    assert body["headers"] == {"X-Campaign": "spring", "Message-ID": email.message_id}
    assert body["categories"] == ["invoice_reminder"]
    assert body["custom_args"] == {"email_worker_id": "job-42"}
    (attached,) = body["attachments"]
    assert attached["filename"] == "invoice.pdf"
    assert attached["type"] == "application/pdf"
    assert attached["disposition"] == "attachment"
    assert base64.b64decode(attached["content"]) == PDF


def test_one_reply_to_address_and_the_sendgrid_checks_pass(
    api: FakeSendGrid, provider: SendGridProvider
) -> None:
    result = provider.send(outgoing(reply_to="help@example.com", html="<b>Hi</b>"))

    assert result.message_id  # the fake checked the request as SendGrid does, and took it
    assert api.requests[0].body["reply_to"] == {"email": "help@example.com"}
    assert "reply_to_list" not in api.requests[0].body


def test_a_narrowed_retry_sends_only_to_the_recipients_left(
    api: FakeSendGrid, provider: SendGridProvider
) -> None:
    email = outgoing(
        to=["ann@example.com", "bob@example.com"], cc="cat@example.com", bcc="dan@example.com"
    )

    result = provider.send(narrowed(email, "bob@example.com", "dan@example.com"))

    assert result.accepted == ("bob@example.com", "dan@example.com")
    assert api.requests[0].body["personalizations"] == [
        {"to": [{"email": "bob@example.com"}], "bcc": [{"email": "dan@example.com"}]}
    ]


def test_a_retry_with_no_to_recipient_left_addresses_each_copy_to_its_recipient(
    api: FakeSendGrid, provider: SendGridProvider
) -> None:
    email = outgoing(to="ann@example.com", cc="cat@example.com", bcc="dan@example.com")

    provider.send(narrowed(email, "cat@example.com", "DAN@example.com"))

    # SendGrid needs a To in every personalization; the To recipient is not sent again.
    assert api.requests[0].body["personalizations"] == [
        {"to": [{"email": "cat@example.com"}]},
        {"to": [{"email": "dan@example.com"}]},
    ]


def test_a_message_without_its_parts_is_refused(provider: SendGridProvider) -> None:
    email = dataclasses.replace(outgoing(), parts=None)

    with pytest.raises(PermanentProviderError, match="sendgrid needs the message's parts"):
        provider.send(email)


def test_a_header_sendgrid_reserves_is_refused_before_sending(
    api: FakeSendGrid, provider: SendGridProvider
) -> None:
    with pytest.raises(PermanentProviderError, match="X-SG-ID"):
        provider.send(outgoing(headers={"X-SG-ID": "mine"}))
    assert api.requests == []


@pytest.mark.parametrize(
    ("reset_in", "expected"),
    [(120, 120), (None, 60), (-30, 1), (86_400, 3600)],
    ids=["in-two-minutes", "no-reset-header", "reset-passed", "reset-tomorrow"],
)
def test_429_is_rate_limited_until_the_reset_time(
    api: FakeSendGrid, provider: SendGridProvider, reset_in: int | None, expected: float
) -> None:
    headers = {} if reset_in is None else {"X-RateLimit-Reset": str(int(time.time()) + reset_in)}
    api.reply(429, errors_body("too many requests"), headers=headers)

    started = time.monotonic()
    with pytest.raises(RateLimitedError) as caught:
        provider.send(outgoing())

    assert time.monotonic() - started < 1  # the provider never sleeps
    assert caught.value.code == 429
    assert expected - 2 <= caught.value.retry_after <= expected


def test_400_is_permanent_with_sendgrid_text_and_addresses_masked(
    api: FakeSendGrid, provider: SendGridProvider
) -> None:
    api.reply(
        400,
        errors_body("Does not contain a valid address: ann@example.com", field="to"),
    )

    with pytest.raises(PermanentProviderError) as caught:
        provider.send(outgoing())

    assert caught.value.code == 400
    assert "to: Does not contain a valid address: a***@example.com" in str(caught.value)
    assert "ann@example.com" not in str(caught.value)


@pytest.mark.parametrize("status", [404, 413])
def test_other_4xx_are_permanent(
    api: FakeSendGrid, provider: SendGridProvider, status: int
) -> None:
    api.reply(status, "not for us")

    with pytest.raises(PermanentProviderError) as caught:
        provider.send(outgoing())

    assert not isinstance(caught.value, AccountProviderError)
    assert caught.value.code == status and "not for us" in str(caught.value)


def test_a_wrong_key_is_an_account_error_logged_without_the_key(
    api: FakeSendGrid, caplog: pytest.LogCaptureFixture
) -> None:
    provider = SendGridProvider("SG.revoked-key", api_url=api.url, timeout=2)

    with caplog.at_level(logging.DEBUG), pytest.raises(AccountProviderError) as caught:
        provider.send(outgoing())

    assert caught.value.code == 401
    assert "invalid, expired, or revoked" in str(caught.value)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors and "invalid, expired, or revoked" in errors[0].getMessage()
    assert not any("revoked-key" in r.getMessage() for r in caplog.records)


def test_403_is_an_account_error(api: FakeSendGrid, provider: SendGridProvider) -> None:
    api.reply(403, errors_body("The from address does not match a verified Sender Identity."))

    with pytest.raises(AccountProviderError, match="verified Sender Identity") as caught:
        provider.send(outgoing())

    assert caught.value.code == 403


@pytest.mark.parametrize("status", [500, 503])
def test_5xx_is_transient(api: FakeSendGrid, provider: SendGridProvider, status: int) -> None:
    api.reply(status, "upstream trouble")

    with pytest.raises(TransientProviderError) as caught:
        provider.send(outgoing())

    assert not isinstance(caught.value, RateLimitedError)
    assert caught.value.code == status
    assert provider.send(outgoing()).message_id  # the next request goes through


def test_a_server_that_does_not_answer_in_time_is_transient(api: FakeSendGrid) -> None:
    provider = SendGridProvider(API_KEY, api_url=api.url, timeout=0.3)
    api.reply(202, delay=5)

    started = time.monotonic()
    with pytest.raises(TransientProviderError, match="whether it took the message is unknown"):
        provider.send(outgoing())

    assert time.monotonic() - started < 2


def test_a_refused_connection_is_transient() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    provider = SendGridProvider(API_KEY, api_url=f"http://127.0.0.1:{port}", timeout=2)

    with pytest.raises(TransientProviderError, match="could not be reached.*refused"):
        provider.send(outgoing())


def test_send_merged_is_one_request_with_a_personalization_per_recipient(
    api: FakeSendGrid, provider: SendGridProvider
) -> None:
    email = outgoing(to="list@example.com", subject="Hi -name-", text="Your code: -code-")
    batch = MergedBatch(
        email,
        tuple(
            MergedRecipient(f"job-{n}", f"{name}@example.com", {"-name-": name, "-code-": str(n)})
            for n, name in enumerate(["ann", "bob", "cat"])
        ),
    )
    api.reply(202, headers={"X-Message-Id": "sg-batch-1"})

    assert provider.send_merged(batch) == "sg-batch-1"

    (request,) = api.requests
    assert request.body["subject"] == "Hi -name-"
    assert request.body["content"] == [{"type": "text/plain", "value": "Your code: -code-"}]
    assert request.body["personalizations"] == [
        {
            "to": [{"email": "ann@example.com"}],
            "substitutions": {"-name-": "ann", "-code-": "0"},
            "custom_args": {"email_worker_id": "job-0"},
        },
        {
            "to": [{"email": "bob@example.com"}],
            "substitutions": {"-name-": "bob", "-code-": "1"},
            "custom_args": {"email_worker_id": "job-1"},
        },
        {
            "to": [{"email": "cat@example.com"}],
            "substitutions": {"-name-": "cat", "-code-": "2"},
            "custom_args": {"email_worker_id": "job-2"},
        },
    ]
    # Each copy is a message of its own: no shared Message-ID, no shared key.
    assert "Message-ID" not in request.body.get("headers", {})
    assert "custom_args" not in request.body


def test_send_merged_fails_as_a_whole(api: FakeSendGrid, provider: SendGridProvider) -> None:
    batch = MergedBatch(outgoing(), (MergedRecipient("job-1", "ann@example.com", {}),))
    api.reply(503)

    with pytest.raises(TransientProviderError):
        provider.send_merged(batch)


def test_send_merged_refuses_more_recipients_than_sendgrid_takes(
    api: FakeSendGrid, provider: SendGridProvider
) -> None:
    recipients = tuple(MergedRecipient(f"job-{n}", f"user{n}@example.com", {}) for n in range(1001))

    with pytest.raises(ValueError, match="1 to 1000 recipients, got 1001"):
        provider.send_merged(MergedBatch(outgoing(), recipients))
    assert api.requests == []


def test_the_api_key_and_addresses_never_reach_a_log_record(
    api: FakeSendGrid, provider: SendGridProvider, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        provider.send(outgoing())
        api.reply(401, errors_body(f"bad key {API_KEY} for ann@example.com"))
        with pytest.raises(AccountProviderError) as caught:
            provider.send(outgoing())

    assert caplog.records  # the refusal was logged
    for record in caplog.records:
        assert API_KEY not in record.getMessage()
        assert "ann@example.com" not in record.getMessage()
    assert API_KEY not in str(caught.value) and "ann@example.com" not in str(caught.value)


def test_check_and_health_make_no_request(api: FakeSendGrid) -> None:
    configured = SendGridProvider(API_KEY, api_url=api.url)
    unconfigured = SendGridProvider("", api_url=api.url)

    assert configured.check() and configured.health() == {"configured": True}
    assert not unconfigured.check() and unconfigured.health() == {"configured": False}
    with pytest.raises(AccountProviderError, match="SENDGRID_API_KEY"):
        unconfigured.send(outgoing())
    configured.close()
    configured.close()
    assert api.requests == []


def test_the_fake_runs_standalone_and_records_requests(tmp_path: Path) -> None:
    port, record = free_port(), tmp_path / "requests.jsonl"
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.sendgrid_api", "--port", str(port)]
        + ["--record", str(record)],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        provider = SendGridProvider(API_KEY, api_url=f"http://127.0.0.1:{port}", timeout=2)
        deadline = time.monotonic() + 10
        while True:
            try:
                result = provider.send(outgoing())
                break
            except TransientProviderError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        server.terminate()
        stdout, stderr = server.communicate(timeout=10)

    assert result.message_id
    (request,) = read_records(record)
    assert request.body["personalizations"] == [{"to": [{"email": "ann@example.com"}]}]
    assert stdout == b"" and stderr == b""
