"""Build RFC 5322 / MIME messages from rendered content; pure, no I/O.

The builder sets every structural header itself; caller-supplied values reach
headers only through :mod:`email.headerregistry`, after validation has refused
CR and LF, so no field can inject a header.  Bcc recipients go in the envelope
only, never in a header.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from dataclasses import dataclass
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from email_worker.rendering import RenderedEmail
from email_worker.validation import EmailRequest

# SMTP policy: CRLF line endings, lines folded at 78; utf8 stays off so non-ASCII
# headers are RFC 2047 encoded and the message passes through 7-bit relays.
MESSAGE_POLICY = policy.SMTP
INTERNATIONAL_POLICY = policy.SMTPUTF8
_MESSAGE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-_]{0,127}$")


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
        return self.message.as_bytes(policy=self.message.policy)

    @property
    def needs_smtputf8(self) -> bool:
        """Whether an address has a non-ASCII local part, which needs the SMTPUTF8 extension."""
        return any(not a.isascii() for a in (self.envelope.sender, *self.envelope.recipients))


def _address(addr: str, name: str = "") -> Address:
    local, _, domain = addr.rpartition("@")
    return Address(display_name=name, username=local, domain=domain)


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
    # A non-ASCII local part cannot be encoded (RFC 2047 does not apply to addresses):
    # such a message is written in UTF-8 and needs SMTPUTF8 (RFC 6531) from the server.
    msg = EmailMessage(
        policy=INTERNATIONAL_POLICY if not all(map(str.isascii, addresses)) else MESSAGE_POLICY
    )
    msg["From"] = _address(from_email, from_name)
    msg["To"] = [_address(a) for a in request.to]
    if request.cc:
        msg["Cc"] = [_address(a) for a in request.cc]
    if request.reply_to:
        msg["Reply-To"] = [_address(a) for a in request.reply_to]
    msg["Subject"] = content.subject
    msg["Date"] = format_datetime(now or dt.datetime.now(dt.UTC))
    msg["Message-ID"] = message_id
    for name, value in request.headers.items():
        msg[name] = value
    msg.set_content(content.text, subtype="plain", charset="utf-8")
    if content.html:
        msg.add_alternative(content.html, subtype="html", charset="utf-8")
        for part in msg.iter_parts():
            del part["MIME-Version"]  # only the top level carries it (RFC 2045 section 4)
    return OutgoingEmail(
        message=msg,
        envelope=Envelope(sender=from_email, recipients=tuple(request.recipients)),
        message_id=message_id,
        kind=request.kind,
    )
