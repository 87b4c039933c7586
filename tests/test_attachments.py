"""Attached files arrive byte for byte under a safe name; hostile names and types are refused."""

from __future__ import annotations

import base64
import datetime as dt
import email
import email.policy
import json
import unicodedata
from email.message import EmailMessage
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from email_worker.errors import InvalidEmailRequest
from email_worker.kinds import GENERIC
from email_worker.mime.attachments import BLOCKED_EXTENSIONS, MAX_ATTACHMENTS, sanitize_filename
from email_worker.mime.content import RenderedEmail
from email_worker.mime.email_request import EmailRequest
from email_worker.mime.messages import Attachment, OutgoingEmail, Sender, build_message
from email_worker.privacy import redacted_request
from email_worker.producer.validation import validate_request
from email_worker.rendering.renderer import render_inline
from tests.support.headers import header_names
from tests.support.smtp_server import SmtpServer

SENDER = Sender("noreply@mail.example.com", "Example Bookings")
EVERY_BYTE = bytes(range(256)) * 4
UTF8_TEXT = "Grüße aus Köln 🎉\r\nZweite Zeile — ñ\n"
DROPPED = {"Cc", "Cf", "Cs", "Zl", "Zp"}  # controls, format characters, surrogates, separators
PART_HEADERS = ["content-type", "content-transfer-encoding", "content-disposition"]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def file(filename: str = "receipt.pdf", content: bytes = b"%PDF-1.7", **fields: Any) -> dict:
    return {"filename": filename, "content": b64(content), "content_type": "application/pdf"} | (
        fields
    )


def check(attachments: Any, *, max_message_bytes: int = 10 * 1024 * 1024, **kwargs: Any):  # type: ignore[no-untyped-def]
    request = {"to": "ann@example.com", "subject": "Your receipt", "text": "Attached."}
    return validate_request(
        GENERIC,
        {**request, **kwargs, "attachments": attachments},
        template_exists=lambda t: True,
        max_message_bytes=max_message_bytes,
    )


def send(attachments: list[dict], *, html: str | None = None) -> OutgoingEmail:
    request = check(attachments, **({"html": html} if html else {}))
    return build_message(
        request,
        render_inline(request.subject or "", request.html, request.text),
        sender=SENDER,
        message_key="job-1",
        now=dt.datetime(2026, 11, 27, 10, 2, tzinfo=dt.UTC),
    )


def parse(raw: bytes) -> EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


# What arrives.


def test_a_binary_file_holding_every_byte_value_arrives_identical() -> None:
    built = send([file("data.bin", EVERY_BYTE, content_type="application/octet-stream")])
    (attached,) = parse(built.as_bytes()).iter_attachments()
    assert attached.get_content_type() == "application/octet-stream"
    assert attached.get_content_disposition() == "attachment"
    assert attached.get_filename() == "data.bin"
    assert attached.get_content() == EVERY_BYTE


def test_a_utf8_text_file_arrives_identical_and_readable() -> None:
    built = send([file("notes.txt", UTF8_TEXT.encode(), content_type="text/plain")])
    (attached,) = parse(built.as_bytes()).iter_attachments()
    assert attached.get_payload(decode=True) == UTF8_TEXT.encode()
    assert attached.get_content_charset() == "utf-8"
    assert attached.get_content() == UTF8_TEXT


@pytest.mark.parametrize(
    "name",
    [
        "reçu.pdf",
        "Überweisung März 2026 – Bestätigung für Jürgen Müller und Familie 🎉.pdf",
        "領収書.pdf",
        "a plain but rather long name that does not fit on the first line.pdf",
        "x" * 251 + ".pdf",
    ],
)
def test_a_file_name_reads_back_as_given(name: str) -> None:
    built = send([file(name)])
    (attached,) = parse(built.as_bytes()).iter_attachments()
    assert attached.get_filename() == name
    assert attached.get_content() == b"%PDF-1.7"
    assert built.as_bytes().isascii()
    assert all(len(line) <= 78 for line in built.as_bytes().split(b"\r\n"))


def test_files_follow_the_text_and_html_in_a_mixed_message() -> None:
    built = send(
        [file("a.pdf", b"first"), file("b.png", b"\x89PNG", content_type="image/png")],
        html="<p>Attached.</p>",
    )
    message = parse(built.as_bytes())
    assert message.get_content_type() == "multipart/mixed"
    alternative, first, second = message.iter_parts()
    assert [p.get_content_type() for p in alternative.iter_parts()] == ["text/plain", "text/html"]
    assert message.get_body(("plain",)).get_content().strip() == "Attached."
    assert [(p.get_filename(), p.get_content()) for p in (first, second)] == [
        ("a.pdf", b"first"),
        ("b.png", b"\x89PNG"),
    ]
    assert second.get_content_type() == "image/png"


def test_a_text_only_message_with_a_file_has_the_text_first() -> None:
    message = parse(send([file()]).as_bytes())
    body, attached = message.iter_parts()
    assert body.get_content_type() == "text/plain" and body.get_content().strip() == "Attached."
    assert attached.get_filename() == "receipt.pdf"


def test_base64_lines_are_76_characters() -> None:
    raw = send([file("big.bin", EVERY_BYTE * 10)]).as_bytes()
    body = raw.rpartition(b'filename="big.bin"\r\n\r\n')[2].partition(b"\r\n\r\n--")[0]
    lines = body.split(b"\r\n")
    assert {len(line) for line in lines[:-1]} == {76}
    assert 0 < len(lines[-1]) <= 76


def test_http_providers_get_the_same_files() -> None:
    built = send([file("notes.txt", UTF8_TEXT.encode(), content_type="Text/Plain")])
    assert built.parts is not None
    assert built.parts.attachments == (Attachment("notes.txt", UTF8_TEXT.encode(), "text/plain"),)


def test_without_files_the_message_is_what_it_was() -> None:
    built = send([])
    assert parse(built.as_bytes()).get_content_type() == "text/plain"
    assert b"multipart" not in built.as_bytes()
    assert built.parts is not None and built.parts.attachments == ()
    plain = check(None)
    assert plain.attachments == [] and "attachments" not in plain.to_payload()


# What the request keeps.


def test_the_payload_keeps_the_files_for_a_stored_job_or_a_retry() -> None:
    request = check([file("../../etc/receipt.pdf", EVERY_BYTE, content_type="APPLICATION/PDF")])
    payload = json.loads(json.dumps(request.to_payload()))
    assert payload["attachments"] == [
        {"filename": "receipt.pdf", "content": b64(EVERY_BYTE), "content_type": "application/pdf"}
    ]
    again = validate_request(GENERIC, payload, template_exists=lambda t: True)
    assert again == request


def test_logs_and_monitors_never_show_the_files() -> None:
    request = check([file("ann-lee-medical-report.pdf", b"private diagnosis")])
    shown = repr(redacted_request(request.to_payload()))
    assert "ann-lee" not in shown and b64(b"private diagnosis") not in shown
    assert "<list, 1 items>" in shown


# File names.


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\win.ini", "win.ini"),
        ("C:\\Users\\ann\\receipt.pdf", "receipt.pdf"),
        ("\"quoted\" 'name' `x`.pdf", "quoted name x.pdf"),
        ("re\x00port\r\nBcc: x@evil.example.pdf", "reportBcc: x@evil.example.pdf"),
        ("tab\there\x7f\x85.pdf", "tabhere.pdf"),
        ("surrogate \ud800 half.pdf", "surrogate  half.pdf"),
        ("bidi \u202eflip.pdf", "bidi flip.pdf"),
        ("report.pdf. . ", "report.pdf"),
        ("  spaced.pdf  ", "spaced.pdf"),
        ("=?utf-8?b?QmNjOiB4?=.pdf", "=?utf-8?b?QmNjOiB4?=.pdf"),
        ("Cafe\u0301.pdf", "Café.pdf"),
    ],
)
def test_file_names_lose_folders_controls_and_quotes(given: str, kept: str) -> None:
    (attachment,) = check([file(given)]).attachments
    assert attachment["filename"] == kept


def test_a_long_name_is_cut_to_255_characters_keeping_its_extension() -> None:
    (attachment,) = check([file("é" * 400 + ".pdf")]).attachments
    assert attachment["filename"] == "é" * 251 + ".pdf"
    assert sanitize_filename("a" * 300) == "a" * 255


@pytest.mark.parametrize(
    "given", ["", "   ", "../", "..", "...", "\x00\r\n", "\u202e", 7, None, "a" * 5000 + ".pdf"]
)
def test_an_empty_or_missing_name_is_refused(given: Any) -> None:
    with pytest.raises(InvalidEmailRequest) as caught:
        check([file(), file(given)])
    assert caught.value.field == "attachments[1].filename"


@pytest.mark.parametrize(
    "given",
    [
        "setup.exe",
        "SETUP.EXE",
        "invoice.pdf.exe",
        "run.exe. . .",
        "invoice\u202efdp.exe",
        "folder/../script.js",
        "install.msi",
        "tool.jar",
        "deploy.ps1",
        "run.sh",
        "hook.dll",
        "screen.scr",
        "macro.vbs",
        "batch.bat",
        "batch.cmd",
        "old.com",
        ".exe",
        # Windows stream syntax and the dots and spaces Windows drops from each part.
        "a.exe::$DATA",
        "a.EXE:Zone.Identifier:$DATA",
        "a.exe:stream",
        "a.exe .::$DATA",
        "a.exe. :hidden",
        "report.pdf:payload.exe",
        "a.exe.",
        "a.exe ",
    ],
)
def test_executable_file_names_are_refused(given: str) -> None:
    with pytest.raises(InvalidEmailRequest, match="executable files") as caught:
        check([file(given)])
    assert caught.value.field == "attachments[0].filename"


@pytest.mark.parametrize("given", ["notes.txt:summary", "Meeting 10:30.pdf", "a.exe-notes.pdf"])
def test_a_colon_alone_does_not_make_a_file_executable(given: str) -> None:
    (attachment,) = check([file(given)]).attachments
    assert attachment["filename"] == given


def test_the_documented_extensions_are_in_the_denylist() -> None:
    documented = "exe bat cmd com scr js vbs msi jar ps1 sh dll"
    assert set(documented.split()) <= BLOCKED_EXTENSIONS


# Content types and contents.


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ("application/pdf; name=x.pdf", "parameters are not accepted"),
        ("pdf", "media type"),
        ("application/", "media type"),
        ("text / plain", "media type"),
        ("text/plain\r\nBcc: x@evil.example", "media type"),
        ("application/p(d)f", "media type"),
        ("", "media type"),
        (None, "media type"),
        ("application/x-msdownload", "executable"),
        ("APPLICATION/X-MSDOS-PROGRAM", "executable"),
        ("text/javascript", "executable"),
        ("application/x-sh", "executable"),
        ("multipart/mixed", "cannot attach"),
        ("message/rfc822", "cannot attach"),
        ("x-custom/thing", "cannot attach"),
        ("application/" + "x" * 300, "longer than 255"),
    ],
)
def test_bad_content_types_are_refused(given: Any, problem: str) -> None:
    with pytest.raises(InvalidEmailRequest, match=problem) as caught:
        check([file(content_type=given)])
    assert caught.value.field == "attachments[0].content_type"


@pytest.mark.parametrize(
    "given", ["not base64!", "QUJD\nREVG", "QUJDRA", "QUJD RA==", "QUJDRA==QUJD", b"QUJD", None]
)
def test_content_must_be_strict_base64_text(given: Any) -> None:
    with pytest.raises(InvalidEmailRequest) as caught:
        check([{"filename": "a.pdf", "content": given, "content_type": "application/pdf"}])
    assert caught.value.field == "attachments[0].content"


def test_an_empty_file_is_allowed() -> None:
    (attached,) = parse(send([file("empty.txt", b"")]).as_bytes()).iter_attachments()
    assert attached.get_filename() == "empty.txt" and attached.get_payload(decode=True) == b""


@pytest.mark.parametrize(
    ("given", "field", "problem"),
    [
        ({"filename": "a.pdf"}, "attachments", "expected a list"),
        ("a.pdf", "attachments", "expected a list"),
        (["a.pdf"], "attachments[0]", "expected a mapping"),
        ([{"filename": "a.pdf", "content": "QUJD"}], "attachments[0]", "missing content_type"),
        (
            [{**file(), "disposition": "inline"}],
            "attachments[0]",
            "unknown disposition",
        ),
        ([file()] * (MAX_ATTACHMENTS + 1), "attachments", f"at most {MAX_ATTACHMENTS}"),
    ],
)
def test_the_list_and_its_items_have_one_shape(given: Any, field: str, problem: str) -> None:
    with pytest.raises(InvalidEmailRequest, match=problem) as caught:
        check(given)
    assert caught.value.field == field


def test_twenty_files_are_allowed() -> None:
    assert len(check([file()] * MAX_ATTACHMENTS).attachments) == MAX_ATTACHMENTS


# Size.


def test_files_count_in_base64_against_the_message_size_limit() -> None:
    # 1,500 bytes is under the 2,000-byte limit, but takes 2,054 in base64 lines.
    with pytest.raises(InvalidEmailRequest, match="MAX_MESSAGE_BYTES") as caught:
        check([file(content=b"x" * 1500)], max_message_bytes=2000)
    assert caught.value.field == "attachments"
    assert check([file(content=b"x" * 1400)], max_message_bytes=2000).attachments


def test_files_and_bodies_count_together() -> None:
    with pytest.raises(InvalidEmailRequest, match="MAX_MESSAGE_BYTES"):
        check([file(content=b"x" * 750)] * 2, max_message_bytes=2000)
    with pytest.raises(InvalidEmailRequest, match="MAX_MESSAGE_BYTES"):
        check([file(content=b"x" * 1200)], text="y" * 500, max_message_bytes=2000)
    assert check([file(content=b"x" * 1200)], text="y" * 300, max_message_bytes=2000)


# Hostile names never add a header line.

HOSTILE_PIECES = st.sampled_from(
    [
        "\r\n",
        "\r",
        "\n",
        "\x00",
        "\x85",
        "\u2028",
        "\ud800",
        '"',
        "\\",
        "/",
        ";",
        "=?",
        "?=",
        "=?utf-8?q?a=0D=0ABcc:_x@evil.example?=",
        "Content-Type: text/html",
        "Bcc: x@evil.example",
        " filename=evil.exe",
        "%0D%0A",
        "é",
        "🎉",
        "\u202e",
        "\t",
        " ",
        ".",
    ]
)
FILE_NAMES = st.lists(st.one_of(HOSTILE_PIECES, st.text(max_size=20)), max_size=12).map("".join)


def build_with(filename: str) -> OutgoingEmail:
    """Build with the name as given, as if validation had let it through."""
    request = EmailRequest(
        kind="email",
        to=["ann@example.com"],
        attachments=[{"filename": filename, "content": b64(b"data"), "content_type": "text/plain"}],
    )
    return build_message(request, RenderedEmail(subject="s", text="Body.\n"), sender=SENDER)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(FILE_NAMES)
def test_no_file_name_adds_a_header_line(filename: str) -> None:
    safe = sanitize_filename(filename)
    if not safe:
        return
    assert sanitize_filename(safe) == safe
    raw = build_with(filename).as_bytes()
    assert header_names(raw) == [
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
    ]
    message = parse(raw)
    body, attached = message.iter_parts()
    part = raw.split(b"\r\n--")[2].partition(b"\r\n")[2]
    assert header_names(part) == PART_HEADERS
    assert b"=?" not in part.partition(b"\r\n\r\n")[0]
    assert attached.get_filename() == safe
    assert attached.get_payload(decode=True) == b"data"
    assert body.get_content().strip() == "Body."


@settings(max_examples=200, deadline=None)
@given(FILE_NAMES)
def test_validation_keeps_or_refuses_a_name_never_anything_else(filename: str) -> None:
    try:
        (attachment,) = check([file(filename)]).attachments
    except InvalidEmailRequest as exc:
        assert exc.field == "attachments[0].filename"
        return
    assert attachment["filename"] == sanitize_filename(filename) != ""
    assert "/" not in attachment["filename"] and "\\" not in attachment["filename"]
    assert len(attachment["filename"]) <= 255
    assert not {unicodedata.category(c) for c in attachment["filename"]} & DROPPED


# Through Redis, a real worker and a real SMTP server.


@pytest.mark.usefixtures("worker")
@pytest.mark.parametrize("tracked", [False, True], ids=["fast path", "tracked job"])
def test_a_file_survives_the_queue_a_stored_job_and_a_retry(
    smtp: SmtpServer, tracked: bool
) -> None:
    from email_worker.tasks import send_email

    smtp.handler.reply_next("DATA", "451 4.3.0 Try again shortly")
    send_email.apply_async(
        kwargs={
            "to": "ann@example.com",
            "subject": "Your data",
            "text": "Attached.",
            "tracked": tracked,
            "attachments": [
                file("données.bin", EVERY_BYTE, content_type="application/octet-stream")
            ],
        }
    )
    (received,) = smtp.wait_for(1)
    assert smtp.handler.data_attempts == 2
    (attached,) = received.message.iter_attachments()
    assert attached.get_filename() == "données.bin"
    assert attached.get_content() == EVERY_BYTE
