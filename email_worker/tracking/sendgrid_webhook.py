"""SendGrid's signed event webhook: verify a request, then read its events.

SendGrid signs the timestamp header followed by the raw body with ECDSA (P-256,
SHA-256); the public key is the base64 one its settings page shows. The check is the
``sendgrid`` library's own. A timestamp outside ``WEBHOOK_MAX_AGE`` of now is refused,
so a captured request cannot be replayed later.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import time

from sendgrid.helpers.eventwebhook import EventWebhook

from email_worker.tracking.events import DeliveryEvent, sendgrid_events

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
_MAX_SIGNATURE = 512  # a DER ECDSA P-256 signature is at most 72 bytes


class SignatureRefused(ValueError):
    """A request that is unsigned, forged, stale, or cannot be checked."""


@functools.lru_cache(maxsize=4)
def _verifier(public_key: str) -> EventWebhook:
    return EventWebhook(public_key)


def verify(
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    *,
    public_key: str,
    max_age: float,
    now: float | None = None,
) -> None:
    """Raise :class:`SignatureRefused` unless SendGrid signed this body recently."""
    if not public_key:
        raise SignatureRefused("SENDGRID_WEBHOOK_PUBLIC_KEY is not set")
    if not signature or not timestamp:
        raise SignatureRefused("unsigned")
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        raise SignatureRefused("malformed timestamp")
    if abs((time.time() if now is None else now) - int(timestamp)) > max_age:
        raise SignatureRefused("timestamp outside the replay window")
    if len(signature) > _MAX_SIGNATURE:
        raise SignatureRefused("malformed signature")
    try:
        verifier = _verifier(public_key)
    except ValueError as exc:
        raise SignatureRefused("SENDGRID_WEBHOOK_PUBLIC_KEY is not a public key") from exc
    try:
        valid = verifier.verify_signature(body.decode("utf-8"), signature, timestamp)
    except (ValueError, TypeError):  # not UTF-8, not base64, not a DER signature
        valid = False
    if not valid:
        raise SignatureRefused("bad signature")


def parse(body: bytes, received_at: dt.datetime) -> list[DeliveryEvent]:
    """The events of a verified batch; ValueError when the body is not JSON."""
    try:
        batch = json.loads(body)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    return sendgrid_events(batch, received_at)
