"""Build RFC 5322 / MIME messages from rendered content; pure, no I/O.

The builder writes the message's bytes itself, header by header, instead of going
through the standard library's header registry (which parses every value it is
given, and decodes any RFC 2047 encoded word in it, CR LF included).  No value a
caller supplies can add a header line or a body: control characters in header text
are replaced, caller text that is not plain ASCII words is written as encoded words
of its own, an attachment's file name is a quoted string or RFC 2231-encoded, and the
header block is checked against the fields it was built from.
Bcc recipients go in the envelope only, never in a header.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import cast

from email_worker.mime.attachments import attachment_part, sanitize_filename
from email_worker.mime.content import RenderedEmail
from email_worker.mime.email_request import EmailRequest
from email_worker.mime.header_fields import (
    RESERVED_HEADER_PREFIXES,
    RESERVED_HEADERS,
    UnsafeMessageError,
    address_field,
    mailbox_field,
    safe_text,
    unstructured_field,
)
from email_worker.mime.text_parts import mime_body, mixed_body

__all__ = [
    "Attachment",
    "Envelope",
    "MessageParts",
    "OutgoingEmail",
    "Sender",
    "UnsafeMessageError",
    "Unsubscribe",
    "build_message",
]

_MESSAGE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-_]{0,127}$")
_FIELD_NAME = re.compile(r"^[!-9;-~]{1,76}$")  # printable ASCII but colon (RFC 5322 ftext)
_MAX_LINE = 998  # RFC 5322 section 2.1.1, CRLF aside
# What a List-Unsubscribe URI may hold: URI characters but the angle brackets and space.
_URI = re.compile(r"^[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]{1,900}$")


@dataclass(frozen=True)
class Sender:
    """The default From of this deployment."""

    email: str
    name: str = ""


@dataclass(frozen=True)
class Unsubscribe:
    """The one-click unsubscribe of a marketing or bulk email (RFC 2369, RFC 8058)."""

    url: str
    mailto: str = ""  # an address; "" for the URL only

    def fields(self) -> list[tuple[str, str]]:
        """The List-Unsubscribe and List-Unsubscribe-Post header lines."""
        uris = [f"<{self.url}>"]
        if self.mailto:
            uris.append(f"<mailto:{self.mailto}?subject=unsubscribe>")
        if not self.url.lower().startswith(("https://", "http://")):
            raise UnsafeMessageError("a List-Unsubscribe URL must be http or https")
        if not all(_URI.match(uri[1:-1]) for uri in uris):
            raise UnsafeMessageError("a List-Unsubscribe URI holds characters a URI cannot")
        return [
            ("List-Unsubscribe", "List-Unsubscribe: " + ",\r\n ".join(uris) + "\r\n"),
            ("List-Unsubscribe-Post", "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"),
        ]


@dataclass(frozen=True)
class Envelope:
    """Who the SMTP transaction is from and to; Bcc recipients appear only here."""

    sender: str
    recipients: tuple[str, ...]


@dataclass(frozen=True)
class Attachment:
    """A file carried by the message, already checked and with a safe file name."""

    filename: str
    content: bytes = field(repr=False)
    content_type: str


@dataclass(frozen=True)
class MessageParts:
    """The message's fields before they were written, for providers that take them apart."""

    from_email: str
    from_name: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    bcc: tuple[str, ...]
    reply_to: tuple[str, ...]
    subject: str
    text: str
    html: str | None
    headers: Mapping[str, str]  # the caller's custom headers, checked
    attachments: tuple[Attachment, ...] = ()


@dataclass(frozen=True)
class OutgoingEmail:
    """A built message with its envelope and the identifiers a provider needs.

    ``key`` is the job id (tracked) or task id (fast path) that provider events are
    matched back by; ``parts`` are the fields the wire bytes were written from.
    """

    wire: bytes = field(repr=False)
    envelope: Envelope
    message_id: str
    kind: str
    needs_smtputf8: bool = False  # an address has a non-ASCII local part (RFC 6531)
    key: str = ""
    parts: MessageParts | None = field(default=None, repr=False)

    def as_bytes(self) -> bytes:
        """The message as it goes on the wire (CRLF line endings)."""
        return self.wire

    @functools.cached_property
    def message(self) -> EmailMessage:
        """The message parsed back by the standard library, for readers that want one."""
        parse_policy = policy.SMTPUTF8 if self.needs_smtputf8 else policy.SMTP
        return cast(EmailMessage, message_from_bytes(self.wire, policy=parse_policy))


def build_message(
    request: EmailRequest,
    content: RenderedEmail,
    *,
    sender: Sender,
    message_id_domain: str = "",
    message_key: str | None = None,
    now: dt.datetime | None = None,
    unsubscribe: Unsubscribe | None = None,
) -> OutgoingEmail:
    """Assemble the MIME message (text first, then HTML, then any files) and its envelope.

    With ``message_key`` (the task or job id) the Message-ID is ``<key@domain>``, the
    same on every retry, so a receiving server or a person can tell a repeat. With
    ``unsubscribe`` the message carries List-Unsubscribe and List-Unsubscribe-Post.
    """
    from_email = request.from_email or sender.email
    from_name = request.from_name if request.from_name is not None else sender.name
    domain = message_id_domain or from_email.rpartition("@")[2]
    if message_key and _MESSAGE_KEY.match(message_key):
        message_id = f"<{message_key}@{domain}>"
    else:
        message_id = make_msgid(domain=domain)

    addresses = (from_email, *request.to, *request.cc, *request.bcc, *request.reply_to)
    if any("=?" in a for a in addresses):
        # A reader would decode it as an encoded word: the header would then name
        # another address than the envelope, or hold lines of its own.
        raise UnsafeMessageError("an address cannot contain '=?' (an encoded word)")
    from_name, subject = safe_text(from_name), safe_text(content.subject)
    fields = [("From", mailbox_field("From", from_name, from_email))]
    fields.append(("To", address_field("To", request.to)))
    if request.cc:
        fields.append(("Cc", address_field("Cc", request.cc)))
    if request.reply_to:
        fields.append(("Reply-To", address_field("Reply-To", request.reply_to)))
    fields.append(("Subject", unstructured_field("Subject", subject)))
    fields.append(("Date", f"Date: {format_datetime(now or dt.datetime.now(dt.UTC))}\r\n"))
    fields.append(("Message-ID", f"Message-ID: {message_id}\r\n"))
    for name, value in request.headers.items():
        _check_custom_name(name)
        fields.append((name, unstructured_field(name, safe_text(value))))
    list_fields = unsubscribe.fields() if unsubscribe is not None else []
    fields += list_fields
    fields.append(("MIME-Version", "MIME-Version: 1.0\r\n"))
    files = tuple(map(_attachment, request.attachments))
    try:
        if files:
            parts = [attachment_part(f.filename, f.content, f.content_type) for f in files]
            content_fields, body = mixed_body(content.text, content.html, parts)
        else:
            content_fields, body = mime_body(content.text, content.html)
    except UnicodeEncodeError:
        raise UnsafeMessageError("the body is not valid Unicode text (a lone surrogate)") from None
    fields += content_fields
    block = "".join(line for _, line in fields).encode("utf-8")
    _check_header_block(block, [name for name, _ in fields])
    return OutgoingEmail(
        wire=block + b"\r\n" + body,
        envelope=Envelope(sender=from_email, recipients=tuple(request.recipients)),
        message_id=message_id,
        kind=request.kind,
        # A non-ASCII local part cannot be encoded (RFC 2047 does not apply to
        # addresses): such a message is written in UTF-8 and needs SMTPUTF8.
        needs_smtputf8=not all(map(str.isascii, addresses)),
        key=message_key or "",
        parts=MessageParts(
            from_email=from_email,
            from_name=from_name,
            to=tuple(request.to),
            cc=tuple(request.cc),
            bcc=tuple(request.bcc),
            reply_to=tuple(request.reply_to),
            subject=subject,
            text=content.text,
            html=content.html,
            headers={
                **{name: safe_text(value) for name, value in request.headers.items()},
                # Providers that take the fields apart (SendGrid) must carry these too.
                **{name: _value_of(line) for name, line in list_fields},
            },
            attachments=files,
        ),
    )


def _value_of(line: str) -> str:
    """A header line's value unfolded."""
    return line.partition(": ")[2].replace("\r\n", "").strip()


def _attachment(item: Mapping[str, str]) -> Attachment:
    """A request's attachment decoded, its file name made safe again whoever built it."""
    try:
        filename = sanitize_filename(item["filename"])
        content = base64.b64decode(item["content"], validate=True)
        content_type = item["content_type"].lower()
    except (KeyError, TypeError, AttributeError, ValueError):
        raise UnsafeMessageError(
            "an attachment needs a filename, base64 content and a content_type"
        ) from None
    if not filename:
        raise UnsafeMessageError("an attachment has no file name")
    return Attachment(filename, content, content_type)


def _check_custom_name(name: str) -> None:
    """Refuse a custom header name that is not a field name, or names a field of ours."""
    lowered = name.lower()
    if (
        not _FIELD_NAME.match(name)
        or lowered in RESERVED_HEADERS
        or lowered.startswith(RESERVED_HEADER_PREFIXES)
    ):
        raise UnsafeMessageError(f"{name!r} cannot be a custom header of this message")


def _check_header_block(block: bytes, names: list[str]) -> None:
    """Refuse a header block whose lines are not the fields the message was built from."""
    lines = block.split(b"\r\n")[:-1]
    starts = [line.partition(b":")[0].lower() for line in lines if line[:1] not in (b" ", b"\t")]
    bare = block.replace(b"\r\n", b"")
    if (
        starts != [name.lower().encode("ascii") for name in names]
        or b"\r" in bare
        or b"\n" in bare
        or any(len(line) > _MAX_LINE or not line.strip() for line in lines)
    ):
        raise UnsafeMessageError("a header value would add lines of its own to the message")
