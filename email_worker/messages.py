"""Build RFC 5322 / MIME messages from rendered content; pure, no I/O.

The builder sets every structural header itself.  No value a caller supplies can
add a header line or a body: control characters in header text are replaced, text
holding ``=?`` (which the header registry would decode as an RFC 2047 encoded word,
CR LF and all) is encoded here as literal text, and the serialised header block is
checked against the headers the message holds.  Bcc recipients go in the envelope
only, never in a header.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from dataclasses import dataclass
from email import policy
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import Policy
from email.utils import format_datetime, make_msgid

from email_worker.content import RenderedEmail
from email_worker.errors import PermanentError
from email_worker.validation import EmailRequest

# SMTP policy: CRLF line endings, lines folded at 78; utf8 stays off so non-ASCII
# headers are RFC 2047 encoded and the message passes through 7-bit relays.
MESSAGE_POLICY = policy.SMTP
INTERNATIONAL_POLICY = policy.SMTPUTF8
_MESSAGE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-_]{0,127}$")
# Control characters (C0, DEL, C1), the separators the email package folds on, and
# lone surrogates (which cannot be encoded): none of them belongs in a header.
_UNSAFE_IN_HEADER = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_REPLACEMENT = "\ufffd"


class UnsafeMessageError(PermanentError):
    """The serialised message does not have the header lines it was built with."""


@dataclass(frozen=True)
class Sender:
    """The default From of this deployment."""

    email: str
    name: str = ""


@dataclass(frozen=True)
class Envelope:
    """Who the SMTP transaction is from and to; Bcc recipients appear only here."""

    sender: str
    recipients: tuple[str, ...]


@dataclass(frozen=True)
class OutgoingEmail:
    """A built message with its envelope and the identifiers a provider needs."""

    message: EmailMessage
    envelope: Envelope
    message_id: str
    kind: str

    def as_bytes(self) -> bytes:
        """The message as it goes on the wire (CRLF line endings); serialised once."""
        return self._wire

    @functools.cached_property
    def _wire(self) -> bytes:
        wire = self.message.as_bytes(policy=self.message.policy)
        _check_header_block(wire, self.message)
        return wire

    @property
    def needs_smtputf8(self) -> bool:
        """Whether an address has a non-ASCII local part, which needs the SMTPUTF8 extension."""
        return any(not a.isascii() for a in (self.envelope.sender, *self.envelope.recipients))


class _EncodedHeader(str):
    """A header of caller text that the builder encodes itself, as RFC 2047 words.

    The header registry decodes any encoded word it finds in a value it is given,
    and writes what it decoded (CR LF included) as raw header text.  A value that
    holds ``=?`` therefore never goes through it: its text is encoded here in full,
    so the reader sees exactly the characters given.  Like the registry's headers,
    the string is the text the reader sees.
    """

    name: str
    _text: str
    _address: str

    def __new__(cls, name: str, text: str, address: str = "") -> _EncodedHeader:
        """``text`` encoded; an ``address`` (an addr-spec) follows it in angle brackets."""
        header = super().__new__(cls, f"{text} <{address}>" if address else text)
        header.name = name
        header._text = text
        header._address = address
        return header

    def fold(self, *, policy: Policy) -> str:
        """The header as written, every line within the length RFC 5322 recommends."""
        encoded = Header(self._text, "utf-8", header_name=self.name).encode(linesep=policy.linesep)
        if self._address:
            encoded = f"{encoded} <{self._address}>"
        return f"{self.name}: {encoded}{policy.linesep}"

    def __reduce__(self) -> tuple[type[_EncodedHeader], tuple[str, str, str]]:
        return type(self), (self.name, self._text, self._address)


def _safe_text(value: str) -> str:
    """Header text with every character that has no place in a header replaced (U+FFFD)."""
    return _UNSAFE_IN_HEADER.sub(_REPLACEMENT, value)


def _text_header(name: str, value: str) -> str | _EncodedHeader:
    text = _safe_text(value)
    return _EncodedHeader(name, text) if "=?" in text else text


def _address(addr: str, name: str = "") -> Address:
    local, _, domain = addr.rpartition("@")
    return Address(display_name=name, username=local, domain=domain)


def _from_header(addr: str, name: str) -> Address | _EncodedHeader:
    text = _safe_text(name)
    if "=?" in text:
        return _EncodedHeader("From", text, _address(addr).addr_spec)
    return _address(addr, text)


def _check_header_block(wire: bytes, message: EmailMessage) -> None:
    """Refuse a serialisation whose header lines are not the headers the message holds."""
    block = wire.partition(b"\r\n\r\n")[0]
    names = [
        line.partition(b":")[0].decode("ascii", "replace").lower()
        for line in block.split(b"\r\n")
        if not line.startswith((b" ", b"\t"))
    ]
    bare = block.replace(b"\r\n", b"")
    if names != [name.lower() for name in message] or b"\r" in bare or b"\n" in bare:
        raise UnsafeMessageError("a header value would add lines of its own to the message")


def build_message(
    request: EmailRequest,
    content: RenderedEmail,
    *,
    sender: Sender,
    message_id_domain: str = "",
    message_key: str | None = None,
    now: dt.datetime | None = None,
) -> OutgoingEmail:
    """Assemble the MIME message (text first, then HTML) and its envelope.

    With ``message_key`` (the task or job id) the Message-ID is ``<key@domain>``, the
    same on every retry, so a receiving server or a person can tell a repeat.
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
        # The header registry would decode it as an encoded word: the header would then
        # name another address than the envelope, or hold lines of its own.
        raise UnsafeMessageError("an address cannot contain '=?' (an encoded word)")
    # A non-ASCII local part cannot be encoded (RFC 2047 does not apply to addresses):
    # such a message is written in UTF-8 and needs SMTPUTF8 (RFC 6531) from the server.
    msg = EmailMessage(
        policy=INTERNATIONAL_POLICY if not all(map(str.isascii, addresses)) else MESSAGE_POLICY
    )
    msg["From"] = _from_header(from_email, from_name)
    msg["To"] = [_address(a) for a in request.to]
    if request.cc:
        msg["Cc"] = [_address(a) for a in request.cc]
    if request.reply_to:
        msg["Reply-To"] = [_address(a) for a in request.reply_to]
    msg["Subject"] = _text_header("Subject", content.subject)
    msg["Date"] = format_datetime(now or dt.datetime.now(dt.UTC))
    msg["Message-ID"] = message_id
    for name, value in request.headers.items():
        msg[name] = _text_header(name, value)
    try:
        msg.set_content(content.text, subtype="plain", charset="utf-8")
        if content.html:
            msg.add_alternative(content.html, subtype="html", charset="utf-8")
    except UnicodeEncodeError:
        raise UnsafeMessageError("the body is not valid Unicode text (a lone surrogate)") from None
    if content.html:
        for part in msg.iter_parts():
            del part["MIME-Version"]  # only the top level carries it (RFC 2045 section 4)
    return OutgoingEmail(
        message=msg,
        envelope=Envelope(sender=from_email, recipients=tuple(request.recipients)),
        message_id=message_id,
        kind=request.kind,
    )
