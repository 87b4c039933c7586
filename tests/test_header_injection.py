"""No value a caller supplies adds a header line or a body of its own, however it is encoded.

The standard library's header registry decodes RFC 2047 encoded words in the values it
is given and writes what it decoded, CR LF included, as raw header text.  A subject,
sender name, custom header or template variable is caller text: it reaches the reader
as the characters given, never as header structure.
"""

from __future__ import annotations

import base64
import datetime as dt
import email
import email.policy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from email_worker.errors import InvalidEmailRequest
from email_worker.kinds import GENERIC
from email_worker.mime.content import RenderedEmail
from email_worker.mime.email_request import EmailRequest
from email_worker.mime.messages import OutgoingEmail, Sender, UnsafeMessageError, build_message
from email_worker.producer.validation import validate_request
from email_worker.rendering.renderer import Renderer, render_inline
from tests.support.headers import header_names

SENDER = Sender("noreply@mail.example.com", "Example Bookings")
BODY = "The body.\n"
B_WORD = "=?utf-8?b?" + base64.b64encode(b"Hi\r\nBcc: x@evil.example\r\n\r\nevil").decode() + "?="
Q_WORD = "=?utf-8?q?Hi=0D=0ABcc:_x@evil.example=0D=0A=0D=0Aevil?="
CUSTOM = ("X-Campaign", "X-Tag")
renderer = Renderer()


def build(subject: str, *, from_name: str | None = None, **headers: str) -> OutgoingEmail:
    """Build with the values as given: no validation, as if it had let them through."""
    request = EmailRequest(
        kind="email", to=["ann@example.com"], from_name=from_name, headers=headers
    )
    return build_message(
        request,
        RenderedEmail(subject=subject, text=BODY),
        sender=SENDER,
        message_key="job-1",
        now=dt.datetime(2026, 11, 27, 10, 2, tzinfo=dt.UTC),
    )


def parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


def text_of(part: email.message.EmailMessage) -> str:
    """The decoded content of a text part, with the wire's CRLF line endings read as LF."""
    return str(part.get_content()).replace("\r\n", "\n")


def assert_only_its_own_headers(built: OutgoingEmail, custom: tuple[str, ...]) -> None:
    """The header lines are those of the same message built from harmless values."""
    raw = built.as_bytes()
    harmless = build("s", from_name="n", **dict.fromkeys(custom, "v"))
    expected = header_names(harmless.as_bytes())
    assert header_names(raw) == expected
    message = parse(raw)
    assert [n.lower() for n in message] == expected
    assert text_of(message) == BODY


@pytest.mark.parametrize("word", [B_WORD, Q_WORD], ids=["b", "q"])
@pytest.mark.parametrize("where", ["subject", "from_name", "header"])
def test_an_encoded_word_reaches_the_reader_as_the_characters_given(word: str, where: str) -> None:
    kwargs = {"to": "ann@example.com", "subject": "s", "text": BODY}
    if where == "subject":
        kwargs["subject"] = word
    elif where == "from_name":
        kwargs["from_name"] = word
    else:
        kwargs["headers"] = {"X-Campaign": word}
    request = validate_request(GENERIC, kwargs, template_exists=lambda t: True)
    built = build_message(
        request, render_inline(request.subject or "", None, request.text), sender=SENDER
    )
    raw = built.as_bytes()
    assert b"Bcc" not in raw and b"evil" not in raw
    message = parse(raw)
    assert message["Bcc"] is None and text_of(message) == BODY
    if where == "subject":
        assert message["Subject"] == word
    elif where == "from_name":
        # Python's reader puts a space between the encoded words of a long name (RFC 2047
        # says to drop it); the word given has no spaces of its own.
        assert message["From"].addresses[0].display_name.replace(" ", "") == word
        assert message["From"].addresses[0].addr_spec == SENDER.email
    else:
        assert message["X-Campaign"] == word


def test_an_encoded_word_in_template_data_stays_text_in_the_subject() -> None:
    content = renderer.render("generic_notice", {"title": f"Order {B_WORD}", "message": "m"})
    request = EmailRequest(kind="email", to=["ann@example.com"], template_id="generic_notice")
    raw = build_message(request, content, sender=SENDER).as_bytes()
    message = parse(raw)
    assert message["Subject"] == f"Order {B_WORD}"
    assert message["Bcc"] is None
    assert header_names(raw).count("subject") == 1 and "bcc" not in header_names(raw)


@pytest.mark.parametrize("char", ["\r\n", "\n", "\x00", "\t", "\x1b", "\x7f", "\x85", "\u2028"])
def test_the_builder_replaces_control_characters_validation_would_refuse(char: str) -> None:
    built = build(f"a{char}Bcc: x@evil.example", from_name=f"n{char}", **{"X-Tag": f"v{char}"})
    assert_only_its_own_headers(built, ("X-Tag",))
    message = parse(built.as_bytes())
    replaced = "\ufffd" * len(char)
    assert message["Subject"] == f"a{replaced}Bcc: x@evil.example"
    assert message["X-Tag"] == f"v{replaced}"


@pytest.mark.parametrize("field", ["to", "cc", "reply_to", "from_email"])
def test_an_address_holding_an_encoded_word_is_refused(field: str) -> None:
    address = "=?utf-8?q?a=0D=0ABcc=3A_x=40evil.example?=@example.com"
    kwargs = {"to": "ann@example.com", "subject": "s", "text": "t", field: address}
    with pytest.raises(InvalidEmailRequest) as caught:
        validate_request(GENERIC, kwargs, template_exists=lambda t: True)
    assert caught.value.field == field
    request = EmailRequest(kind="email", to=["ann@example.com"], cc=[address])
    with pytest.raises(UnsafeMessageError):
        build_message(request, RenderedEmail(subject="s", text="t"), sender=SENDER)


def test_a_body_that_is_not_unicode_is_a_clear_error() -> None:
    request = EmailRequest(kind="email", to=["ann@example.com"])
    with pytest.raises(UnsafeMessageError, match="not valid Unicode"):
        build_message(request, RenderedEmail(subject="s", text="x \ud800 y"), sender=SENDER)


HOSTILE_PIECES = st.sampled_from(
    [
        B_WORD,
        Q_WORD,
        "=?",
        "?=",
        "=?utf-8?q?",
        "=?iso-8859-1?b?",
        "=0D=0A",
        "\r\n",
        "\r",
        "\n",
        "\x00",
        "\t",
        "\x1b",
        "\x7f",
        "\x85",
        "\u2028",
        "Bcc: x@evil.example",
        '"',
        "\\",
        "<",
        ">",
        ",",
        ":",
        ";",
        "(",
        ")",
        "@",
        " ",
        "ü",
        "🎉",
    ]
)
ANY_CHAR = st.characters(exclude_categories=())  # lone surrogates included
HOSTILE_TEXT = st.lists(st.one_of(HOSTILE_PIECES, st.text(ANY_CHAR, max_size=12)), max_size=10).map(
    "".join
)
HEADERS = st.dictionaries(st.sampled_from(CUSTOM), HOSTILE_TEXT, max_size=2)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subject=HOSTILE_TEXT, from_name=st.none() | HOSTILE_TEXT, headers=HEADERS)
def test_no_header_value_adds_a_header_line_or_a_body(
    subject: str, from_name: str | None, headers: dict[str, str]
) -> None:
    built = build(subject, from_name=from_name, **headers)
    assert_only_its_own_headers(built, tuple(headers))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(title=HOSTILE_TEXT.filter(lambda t: t.strip() and "\x00" not in t), message=HOSTILE_TEXT)
def test_no_template_data_adds_a_header_line_or_a_body(title: str, message: str) -> None:
    try:
        content = renderer.render("generic_notice", {"title": title, "message": message})
    except Exception:  # e.g. a title of only whitespace renders an empty subject
        return
    request = EmailRequest(kind="email", to=["ann@example.com"], template_id="generic_notice")
    try:
        built = build_message(request, content, sender=SENDER)
        raw = built.as_bytes()
    except UnsafeMessageError:
        assert any("\ud800" <= c <= "\udfff" for c in title + message)  # refused, not sent
        return
    assert header_names(raw) == [
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
    ]
    plain, html = parse(raw).iter_parts()
    assert text_of(plain).splitlines() == content.text.splitlines()
    assert text_of(html).splitlines() == (content.html or "").splitlines()
