"""Built messages are valid RFC 5322 / MIME with every header where a reader expects it."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import subprocess
import sys

from email_worker.kinds import GENERIC
from email_worker.messages import Sender, build_message
from email_worker.rendering import render_inline
from email_worker.validation import validate_request

SENDER = Sender("noreply@mail.example.com", "Example Bookings")


def build(**kwargs):  # type: ignore[no-untyped-def]
    request = validate_request(GENERIC, kwargs, template_exists=lambda t: True)
    content = render_inline(request.subject or "", request.html, request.text)
    return build_message(
        request,
        content,
        sender=SENDER,
        message_key="job-1",
        now=dt.datetime(2026, 11, 27, 10, 2, tzinfo=dt.UTC),
    )


def parse(raw: bytes):  # type: ignore[no-untyped-def]
    return email.message_from_bytes(raw, policy=email.policy.default)


def test_headers_and_parts() -> None:
    built = build(
        to=["ann@example.com", "bob@example.com"],
        cc="cat@example.com",
        bcc="dan@example.com",
        reply_to="help@example.com",
        subject="Your receipt",
        text="Plain",
        html="<p>Rich</p>",
        headers={"X-Campaign": "nov"},
    )
    raw = built.as_bytes()
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    msg = parse(raw)
    assert msg["From"] == "Example Bookings <noreply@mail.example.com>"
    assert msg["To"] == "ann@example.com, bob@example.com"
    assert msg["Cc"] == "cat@example.com"
    assert msg["Bcc"] is None
    assert msg["Reply-To"] == "help@example.com"
    assert msg["Subject"] == "Your receipt"
    assert msg["Date"] == "Fri, 27 Nov 2026 10:02:00 +0000"
    assert msg["Message-ID"] == "<job-1@mail.example.com>"
    assert msg["MIME-Version"] == "1.0"
    assert msg["X-Campaign"] == "nov"
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert parts[0].get_content().strip() == "Plain"
    assert built.envelope.recipients == (
        "ann@example.com",
        "bob@example.com",
        "cat@example.com",
        "dan@example.com",
    )


def test_non_ascii_subject_and_name_are_encoded() -> None:
    built = build(
        to="ann@example.com",
        subject="Grüße aus Köln 🎉",
        text="Hallo",
        from_name='Bücher & Co, "Köln"',
    )
    raw = built.as_bytes()
    assert raw.isascii()
    msg = parse(raw)
    assert msg["Subject"] == "Grüße aus Köln 🎉"
    assert msg["From"].addresses[0].display_name == 'Bücher & Co, "Köln"'
    assert msg["From"].addresses[0].addr_spec == "noreply@mail.example.com"


def test_text_only_message_is_single_part() -> None:
    msg = parse(build(to="ann@example.com", subject="s", text="only text").as_bytes())
    assert msg.get_content_type() == "text/plain"


def test_html_only_inline_gets_a_text_part() -> None:
    msg = parse(build(to="ann@example.com", subject="s", html="<p>Hi <b>you</b></p>").as_bytes())
    plain, html = msg.iter_parts()
    assert plain.get_content().strip() == "Hi you"


def test_message_id_falls_back_when_the_key_is_unsafe() -> None:
    request = validate_request(
        GENERIC,
        {"to": "a@example.com", "subject": "s", "text": "t"},
        template_exists=lambda t: True,
    )
    built = build_message(
        request, render_inline("s", None, "t"), sender=SENDER, message_key="bad>\r\nX-Evil: 1"
    )
    assert "\n" not in built.message_id and built.message_id.endswith("@mail.example.com>")


def test_a_non_ascii_local_part_makes_a_utf8_message() -> None:
    built = build(to="ñoño@example.com", subject="Hola", text="x")
    raw = built.as_bytes()
    assert "To: ñoño@example.com".encode() in raw
    assert b"=?utf-8?" not in raw.split(b"\r\n\r\n")[0].split(b"To:")[1].split(b"\r\n")[0]
    assert built.needs_smtputf8
    parsed = email.message_from_string(raw.decode("utf-8"), policy=email.policy.default)
    assert parsed["To"].addresses[0].username == "ñoño"


def test_building_a_message_does_not_import_the_template_engine() -> None:
    code = (
        "import sys, email_worker.messages, email_worker.rendering;"
        "from email_worker.content import RenderedEmail;"
        "assert email_worker.rendering.RenderedEmail is RenderedEmail"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    code = "import sys, email_worker.messages; print('jinja2' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "False"
