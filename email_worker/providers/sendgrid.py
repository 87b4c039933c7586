"""SendGrid delivery through the v3 mail send API and the official ``sendgrid`` client.

A message is sent as its parts (from, recipients, subject, contents, headers,
attachments), not as raw MIME: the v3 API takes no raw message.  The kind goes in as
a category and the message's key as the custom argument ``email_worker_id``, which
SendGrid hands back in every event webhook.  Replies are classified here: 429 is a
rate limit with its reset time, 5xx and network failures are transient, 401/403 are
account-level, and every other 4xx is permanent, with SendGrid's own error text.
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import logging
import math
import time
import urllib.error
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sendgrid
from python_http_client.exceptions import HTTPError

from email_worker.errors import (
    AccountProviderError,
    PermanentProviderError,
    ProviderError,
    RateLimitedError,
    TransientProviderError,
)
from email_worker.mime.messages import MessageParts, OutgoingEmail
from email_worker.privacy import redact_text
from email_worker.providers.base import SendResult

log = logging.getLogger(__name__)

NAME = "sendgrid"
ID_ARG = "email_worker_id"  # the custom argument that matches webhook events back
MAX_PERSONALIZATIONS = 1000  # per request (SendGrid's limit)
# Headers SendGrid sets itself and refuses in a request; the message builder already
# refuses the others of SendGrid's list (To, From, Subject, Content-Type, ...).
SENDGRID_RESERVED_HEADERS = frozenset({"x-sg-id", "x-sg-eid"})
DEFAULT_RETRY_AFTER = 60.0
MAX_RETRY_AFTER = 3600.0
_MAX_ERROR_TEXT = 500


class _DropTransportLog(logging.Filter):
    """Drops python_http_client's records: at DEBUG it logs the Authorization header
    (the API key), request bodies (addresses) and response bodies."""

    def filter(self, record: logging.LogRecord) -> bool:
        return False


_transport_log = logging.getLogger("python_http_client.client")
if not any(isinstance(f, _DropTransportLog) for f in _transport_log.filters):
    _transport_log.addFilter(_DropTransportLog())


@dataclass(frozen=True)
class MergedRecipient:
    """One recipient of a merged send, with the values of the message's markers."""

    key: str  # our per-recipient id, sent as the custom argument email_worker_id
    to: str
    substitutions: Mapping[str, str]  # marker -> value, applied to subject, text and html
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)  # List-Unsubscribe


@dataclass(frozen=True)
class MergedBatch:
    """One message sent to many recipients, each with their own substitutions."""

    email: OutgoingEmail  # the shared message; its parts hold the marker text
    recipients: tuple[MergedRecipient, ...]


class SendGridProvider:
    """Sends through SendGrid's v3 API with one client per worker process."""

    name = NAME

    def __init__(
        self, api_key: str, *, api_url: str = "https://api.sendgrid.com", timeout: float = 10.0
    ) -> None:
        self._api_key = api_key
        self._api = sendgrid.SendGridAPIClient(api_key=api_key, host=api_url.rstrip("/"))
        # Every request builds its client from this one, and inherits the timeout.
        self._api.client.timeout = timeout

    def send(self, email: OutgoingEmail) -> SendResult:
        """Hand the message to SendGrid; its X-Message-Id is the result's message id."""
        parts = _parts_of(email)
        payload = _message_payload(email, parts)
        payload["personalizations"] = _personalizations(parts, email.envelope.recipients)
        if email.key:
            payload["custom_args"] = {ID_ARG: email.key}
        if email.message_id:
            # Not reserved by SendGrid, so receivers see the same Message-ID as over SMTP.
            # SendGrid may still replace it when the From domain is not authenticated.
            payload["headers"] = {**payload.get("headers", {}), "Message-ID": email.message_id}
        message_id = self._post(payload)
        return SendResult(message_id or None, accepted=email.envelope.recipients)

    def send_merged(self, batch: MergedBatch) -> str:
        """Send one message to each recipient in a single request; return its X-Message-Id.

        Each recipient gets their own copy (one personalization each) with their
        substitutions applied; the request succeeds or fails as a whole.
        """
        count = len(batch.recipients)
        if not 1 <= count <= MAX_PERSONALIZATIONS:
            raise ValueError(
                f"a merged send takes 1 to {MAX_PERSONALIZATIONS} recipients, got {count}"
            )
        # No shared Message-ID header: every recipient's copy is a message of its own,
        # and SendGrid gives each one its own id.
        payload = _message_payload(batch.email, _parts_of(batch.email))
        payload["personalizations"] = [
            {
                "to": [{"email": recipient.to}],
                "substitutions": dict(recipient.substitutions),
                "custom_args": {ID_ARG: recipient.key},
                **({"headers": _headers(recipient.headers)} if recipient.headers else {}),
            }
            for recipient in batch.recipients
        ]
        return self._post(payload)

    def _post(self, payload: dict[str, Any]) -> str:
        """Send one mail-send request and return the X-Message-Id of the 2xx reply."""
        if not self._api_key:
            raise AccountProviderError("SENDGRID_API_KEY is not set", provider=NAME)
        try:
            response = self._api.send(payload)
        except HTTPError as exc:
            raise self._refused(exc) from None
        except urllib.error.URLError as exc:  # urllib could not send the request
            raise TransientProviderError(
                f"SendGrid could not be reached: {self._clean(str(exc.reason))}", provider=NAME
            ) from None
        except (http.client.HTTPException, OSError) as exc:
            raise TransientProviderError(
                f"SendGrid did not answer, so whether it took the message is unknown: "
                f"{self._clean(str(exc) or type(exc).__name__)}",
                provider=NAME,
            ) from None
        return str(response.headers.get("X-Message-Id") or "")

    def _refused(self, exc: HTTPError) -> ProviderError:
        """Classify an error reply, logging account-level ones loudly."""
        status = int(exc.status_code)
        error = classify_response(status, self._clean(error_text(exc.body)), exc.headers)
        if isinstance(error, AccountProviderError):
            log.error(
                "%s; every send through sendgrid fails until the account or its key is fixed",
                error.message,
            )
        return error

    def _clean(self, text: str) -> str:
        """Keep the API key out of a text even if a reply echoes it back."""
        return text.replace(self._api_key, "***") if self._api_key else text

    def close(self) -> None:
        """Nothing to release: every request opens and closes its own connection."""

    def check(self) -> bool:
        """Whether an API key is configured; no request is made."""
        return bool(self._api_key)

    def health(self) -> dict[str, Any]:
        """What the health endpoint shows of this provider."""
        return {"configured": bool(self._api_key)}


def classify_response(
    status: int, text: str, headers: Mapping[str, str] | None, now: float | None = None
) -> ProviderError:
    """Turn an error reply of the mail send API into the error the worker acts on."""
    message = f"SendGrid refused the request (HTTP {status}): {text}"
    if status == 429:
        return RateLimitedError(
            message, provider=NAME, code=status, retry_after=retry_after(headers, now)
        )
    if status >= 500:
        return TransientProviderError(message, provider=NAME, code=status)
    if status in (401, 403):
        return AccountProviderError(message, provider=NAME, code=status)
    return PermanentProviderError(message, provider=NAME, code=status)


def retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float:
    """Seconds until the X-RateLimit-Reset time (epoch seconds), from 1 to 3600."""
    reset = (headers or {}).get("X-RateLimit-Reset")
    try:
        seconds = float(reset or "nan") - (time.time() if now is None else now)
    except ValueError:
        seconds = math.nan
    if math.isnan(seconds):
        return DEFAULT_RETRY_AFTER
    return min(max(seconds, 1.0), MAX_RETRY_AFTER)


def error_text(body: bytes | str | None) -> str:
    """SendGrid's ``errors[].message`` texts of a reply body, addresses masked."""
    raw = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
    try:
        errors = json.loads(raw).get("errors")
        texts = [
            f"{e['field']}: {e['message']}" if e.get("field") else str(e["message"])
            for e in errors
            if isinstance(e, dict) and e.get("message")
        ]
    except (ValueError, AttributeError, TypeError):
        texts = []
    text = "; ".join(texts) if texts else " ".join(raw.split()) or "no error text"
    if len(text) > _MAX_ERROR_TEXT:
        text = text[:_MAX_ERROR_TEXT] + "..."
    return redact_text(text)


def _parts_of(email: OutgoingEmail) -> MessageParts:
    if email.parts is None:
        raise PermanentProviderError("sendgrid needs the message's parts", provider=NAME)
    return email.parts


def _message_payload(email: OutgoingEmail, parts: MessageParts) -> dict[str, Any]:
    """What every copy of the message shares: sender, subject, contents and the rest."""
    payload: dict[str, Any] = {
        "from": _address(parts.from_email, parts.from_name),
        "subject": parts.subject,
        "content": _contents(parts),
    }
    if len(parts.reply_to) == 1:
        payload["reply_to"] = _address(parts.reply_to[0])
    elif parts.reply_to:
        payload["reply_to_list"] = [_address(a) for a in parts.reply_to]
    if parts.headers:
        payload["headers"] = _headers(parts.headers)
    if parts.attachments:
        payload["attachments"] = [
            {
                "content": base64.b64encode(a.content).decode("ascii"),
                "type": a.content_type,
                "filename": a.filename,
                "disposition": "attachment",
            }
            for a in parts.attachments
        ]
    if email.kind:
        payload["categories"] = [email.kind]
    return payload


def _personalizations(
    parts: MessageParts, recipients: tuple[str, ...]
) -> list[dict[str, list[dict[str, str]]]]:
    """The recipients of one send, limited to the envelope (a retry may narrow it).

    SendGrid refuses an address twice in one personalization, and one without a To:
    when a retry leaves no To recipient, each one left gets a copy addressed to them.
    """
    # The envelope may spell an address in another case than the header fields did.
    remaining = {a.lower() for a in recipients}
    listed = {a.lower() for a in (*parts.to, *parts.cc, *parts.bcc)}
    leftover = tuple(a for a in recipients if a.lower() not in listed)
    fields: dict[str, list[dict[str, str]]] = {}
    for field, addresses in (("to", parts.to), ("cc", parts.cc), ("bcc", (*parts.bcc, *leftover))):
        chosen = []
        for address in addresses:
            if address.lower() in remaining:
                remaining.discard(address.lower())  # once, in its first field
                chosen.append({"email": address})
        if chosen:
            fields[field] = chosen
    if "to" in fields:
        return [fields]
    return [{"to": [entry]} for field in ("cc", "bcc") for entry in fields.get(field, [])]


def _contents(parts: MessageParts) -> list[dict[str, str]]:
    """Text first, then HTML, as SendGrid requires."""
    contents = [{"type": "text/plain", "value": parts.text}] if parts.text else []
    if parts.html:
        contents.append({"type": "text/html", "value": parts.html})
    if not contents:
        raise PermanentProviderError("SendGrid cannot send a message with no body", provider=NAME)
    return contents


def _headers(headers: Mapping[str, str]) -> dict[str, str]:
    for name in headers:
        if name.lower() in SENDGRID_RESERVED_HEADERS:
            raise PermanentProviderError(
                f"SendGrid sets the {name} header itself: it cannot be a custom header",
                provider=NAME,
            )
    return dict(headers)


def _address(email: str, name: str = "") -> dict[str, str]:
    return {"email": email, "name": name} if name else {"email": email}
