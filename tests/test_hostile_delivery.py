"""Hostile values that are accepted arrive as the text given, through a real worker and SMTP."""

from __future__ import annotations

import base64

import pytest

from tests.support.headers import header_names
from tests.support.smtp_server import SmtpServer

pytestmark = pytest.mark.usefixtures("worker")

INJECTION = (
    "=?utf-8?b?" + base64.b64encode(b"Hi\r\nBcc: eve@evil.example\r\n\r\nevil").decode() + "?="
)


def test_an_encoded_word_in_template_data_arrives_as_text(smtp: SmtpServer) -> None:
    from email_worker.tasks import send_email

    send_email.delay(
        to="ann@example.com",
        template_id="generic_notice",
        data={"title": f"Order {INJECTION}", "message": "Shipped."},
    )
    (received,) = smtp.wait_for(1)
    assert received.recipients == ["ann@example.com"]
    assert header_names(received.raw).count("subject") == 1
    assert "bcc" not in header_names(received.raw)
    assert received.message["Subject"] == f"Order {INJECTION}"
    assert "Shipped." in received.message.get_body(("plain",)).get_content()


def test_an_encoded_word_in_inline_headers_arrives_as_text(smtp: SmtpServer) -> None:
    from email_worker.tasks import send_email

    send_email.delay(
        to="ann@example.com",
        subject=INJECTION,
        text="The body.",
        headers={"X-Ref": INJECTION},
    )
    (received,) = smtp.wait_for(1)
    assert received.recipients == ["ann@example.com"]
    assert "bcc" not in header_names(received.raw)
    assert received.message["Subject"] == INJECTION
    assert received.message["X-Ref"] == INJECTION
    assert received.message.get_content().strip() == "The body."


def test_template_data_named_self_renders(smtp: SmtpServer) -> None:
    from email_worker.tasks import send_email

    send_email.delay(
        to="ann@example.com",
        template_id="generic_notice",
        data={"title": "Hello", "message": "Shipped.", "self": "x"},
    )
    (received,) = smtp.wait_for(1)
    assert received.message["Subject"] == "Hello"
