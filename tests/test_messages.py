"""Built messages are valid RFC 5322 / MIME with every header where a reader expects it."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import subprocess
import sys
from email.header import decode_header, make_header
from email.message import EmailMessage
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from email_worker.kinds import GENERIC
from email_worker.mime.content import RenderedEmail
from email_worker.mime.email_request import EmailRequest
from email_worker.mime.messages import OutgoingEmail, Sender, UnsafeMessageError, build_message
from email_worker.producer.validation import validate_request
from email_worker.rendering.renderer import render_inline

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
        "import sys, email_worker.mime.messages, email_worker.rendering.renderer;"
        "from email_worker.mime.content import RenderedEmail;"
        "assert email_worker.rendering.renderer.RenderedEmail is RenderedEmail"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    code = "import sys, email_worker.mime.messages; print('jinja2' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "False"


# What a reader gets back from the wire, compared with what was asked for.

ADDRESSES = [
    "ann@example.com",
    "o'brien+tag@sub.example.org",
    "a.b@example.net",
    "ñoño@example.com",
]
# Text a request may carry in a header: anything but control characters and surrogates.
HEADER_TEXT = st.text(
    st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp"), exclude_characters="\x85"),
    max_size=300,
)
BODY_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=3000)


def build_exactly(
    *,
    subject: str,
    text: str,
    html: str | None = None,
    from_name: str = "",
    to: tuple[str, ...] = ("ann@example.com",),
    cc: tuple[str, ...] = (),
    reply_to: tuple[str, ...] = (),
    headers: dict[str, str] | None = None,
) -> OutgoingEmail:
    """Build from the values as given, as the worker does after validation."""
    request = EmailRequest(
        kind="email",
        to=list(to),
        cc=list(cc),
        bcc=["hidden@example.com"],
        reply_to=list(reply_to),
        from_name=from_name,
        headers=headers or {},
    )
    return build_message(
        request,
        RenderedEmail(subject=subject, text=text, html=html),
        sender=SENDER,
        message_key="job-1",
        now=dt.datetime(2026, 11, 27, 10, 2, tzinfo=dt.UTC),
    )


def read_back(raw: bytes) -> EmailMessage:
    """The message as a standard reader parses it (UTF-8 headers only with SMTPUTF8)."""
    source = raw.decode("utf-8")
    return email.message_from_string(source, policy=email.policy.default)  # type: ignore[return-value]


def display_name(raw: bytes) -> str:
    """The sender's name as a reader decodes it (RFC 2047 drops the space between words)."""
    unfolded = email.message_from_bytes(raw)["From"].replace("\r\n", "")
    phrase = unfolded.rpartition(" <")[0]
    if phrase.startswith("=?"):
        return str(make_header(decode_header(phrase)))
    return str(read_back(raw)["From"].addresses[0].display_name)


def as_sent(text: str) -> str:
    """Text as a reader gets it: every line break a newline, and one at the end."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text if text.endswith("\n") else text + "\n"


def decoded(part: EmailMessage) -> str:
    return str(part.get_content()).replace("\r\n", "\n")


def assert_reads_back(
    built: OutgoingEmail,
    *,
    subject: str,
    text: str,
    html: str | None = None,
    from_name: str = "",
    to: tuple[str, ...] = ("ann@example.com",),
    cc: tuple[str, ...] = (),
    reply_to: tuple[str, ...] = (),
    headers: dict[str, str] | None = None,
) -> None:
    raw = built.as_bytes()
    assert b"\n" not in raw.replace(b"\r\n", b"") and b"\r" not in raw.replace(b"\r\n", b"")
    for line in raw.split(b"\r\n"):
        # RFC 5322 2.1.1: 78 where the name leaves room for a word after it, never past 998.
        long_name = line[:1] != b" " and len(line.partition(b":")[0]) > 50
        assert len(line) <= (998 if long_name else 78)
    assert raw.isascii() or built.needs_smtputf8
    assert b"hidden" not in raw
    msg = read_back(raw)
    assert not msg.defects
    assert msg["Subject"] == subject
    assert display_name(raw) == from_name
    assert msg["From"].addresses[0].addr_spec == SENDER.email
    assert [a.addr_spec for a in msg["To"].addresses] == list(to)
    if cc:
        assert [a.addr_spec for a in msg["Cc"].addresses] == list(cc)
    else:
        assert msg["Cc"] is None
    if reply_to:
        assert [a.addr_spec for a in msg["Reply-To"].addresses] == list(reply_to)
    else:
        assert msg["Reply-To"] is None
    assert msg["Bcc"] is None
    assert msg["Date"] == "Fri, 27 Nov 2026 10:02:00 +0000"
    assert msg["Message-ID"] == "<job-1@mail.example.com>"
    assert msg["MIME-Version"] == "1.0"
    for name, value in (headers or {}).items():
        assert msg[name] == value
    if html is None:
        assert msg.get_content_type() == "text/plain"
        assert decoded(msg) == as_sent(text)
    else:
        assert msg.get_content_type() == "multipart/alternative"
        plain, rich = msg.iter_parts()
        assert [plain.get_content_type(), rich.get_content_type()] == ["text/plain", "text/html"]
        assert decoded(plain) == as_sent(text)  # type: ignore[arg-type]
        assert decoded(rich) == as_sent(html)  # type: ignore[arg-type]
        for part in (plain, rich):
            assert part["MIME-Version"] is None  # only the top level (RFC 2045 section 4)
            assert part.get_content_charset() == "utf-8"
    for part in msg.walk():
        assert part["Content-Transfer-Encoding"] in (None, "7bit", "quoted-printable", "base64")


LONG_LINE = "word " * 60 + "x" * 300
CASES = {
    "ascii": dict(subject="Your receipt", text="Plain", html="<p>Rich</p>", from_name="Ann"),
    "specials in the name": dict(subject="s", text="t", from_name='Bücher & Co, "Köln" <x@y>'),
    "quoted name": dict(subject="s", text="t", from_name='Ann "the" O\'Brien, Esq. \\o/'),
    "long non-ascii name": dict(subject="s", text="t", from_name="Ünïcödé Nämé " * 12),
    "emoji": dict(subject="🎉 Party 🎉🎉", text="Fun 🎉\n", html="<b>🎉</b>", from_name="🎉"),
    "long ascii subject": dict(subject="The quick brown fox jumps " * 30, text="t"),
    "long non-ascii subject": dict(subject="Grüße aus Köln, 東京 und 🎉 " * 25, text="t"),
    "unbroken subject": dict(subject="x" * 200, text="t"),
    "spaces around the subject": dict(subject="  two  spaces  ", text="t"),
    "subject looking encoded": dict(subject="=?utf-8?q?not_a_word?=", text="t"),
    "long lines": dict(subject="s", text=LONG_LINE, html=f"<p>{LONG_LINE}</p>"),
    "dots and From": dict(subject="s", text=".\n..\n.x\nFrom me\n.", html=".\r\n."),
    "line breaks": dict(subject="s", text="a\r\nb\rc\nd\r\n\r\n\ne", html="x\r\r\ny"),
    "trailing white space": dict(subject="s", text="a \nb\t\n \n", html="\t"),
    "boundary look-alike": dict(subject="s", text="--=_x\n--\n=_\n", html="--=_0 =3D"),
    "cyrillic body": dict(subject="Привет", text="Привет, мир! " * 100, html="<p>Мир</p>"),
    "empty body": dict(subject="s", text="", html=""),
    "control characters in the body": dict(subject="s", text="a\x00b\x0bc\x0cd\x7f\x85e"),
    "recipients": dict(
        subject="s",
        text="t",
        to=tuple(f"user{i}@example.com" for i in range(12)),
        cc=("o'brien+tag@sub.example.org",),
        reply_to=("help@example.com", "a.b@example.net"),
    ),
    "international": dict(subject="Hola", text="x", to=("ñoño@example.com",), from_name="Año"),
    "custom headers": dict(
        subject="s",
        text="t",
        headers={
            "X-Campaign": "nov",
            "X-Long": "ü " * 200,
            "X-Name-That-Is-Quite-Long-Indeed": "v",
            "X-" + "n" * 74: "plain words " * 10,
            "X-" + "e" * 74: "encoded wörds " * 10,
        },
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_every_header_and_part_reads_back_as_given(case: dict[str, Any]) -> None:
    assert_reads_back(build_exactly(**case), **case)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    subject=HEADER_TEXT,
    from_name=HEADER_TEXT.filter(lambda n: len(n) <= 256),
    text=BODY_TEXT,
    html=st.none() | BODY_TEXT,
    to=st.lists(st.sampled_from(ADDRESSES), min_size=1, max_size=5, unique=True).map(tuple),
    cc=st.lists(st.sampled_from(ADDRESSES), max_size=3, unique=True).map(tuple),
    headers=st.dictionaries(
        st.sampled_from(["X-Campaign", "X-" + "n" * 74]), HEADER_TEXT, max_size=2
    ),
)
def test_what_a_reader_parses_is_what_was_asked_for(**case: Any) -> None:
    assert_reads_back(build_exactly(**case), **case)


def test_a_long_subject_folds_between_whole_encoded_words() -> None:
    subject = "ü🎉" * 100
    raw = build_exactly(subject=subject, text="t").as_bytes()
    field = raw.split(b"\r\nDate:")[0].split(b"Subject:")[1]
    lines = field.split(b"\r\n")
    assert len(lines) > 5 and all(len(line) <= 76 for line in lines)
    assert all(line.strip().startswith(b"=?utf-8?") and line.endswith(b"?=") for line in lines)
    for line in lines:  # each word holds whole characters: it decodes on its own
        assert str(make_header(decode_header(line.strip().decode())))


def test_the_parsed_message_is_there_for_readers_that_want_one() -> None:
    built = build_exactly(subject="Grüße", text="t", html="<p>h</p>")
    assert built.message["Subject"] == "Grüße"
    assert built.message.get_body(("html",)).get_content().strip() == "<p>h</p>"  # type: ignore[union-attr]


def test_a_header_name_the_builder_sets_itself_is_refused() -> None:
    for name in ("Bcc", "content-type", "Resent-To", "X Bad", "X:Bad"):
        with pytest.raises(UnsafeMessageError):
            build_exactly(subject="s", text="t", headers={name: "v"})


def test_every_line_is_within_998_octets_whatever_the_content() -> None:
    raw = build_exactly(
        subject="s" * 998, text="y" * 5000, html="z" * 5000, from_name="n" * 256
    ).as_bytes()
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78
