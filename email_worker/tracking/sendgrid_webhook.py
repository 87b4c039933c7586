"""SendGrid's signed event webhook: verify a request, then read its events.

SendGrid signs the timestamp header followed by the raw body with ECDSA (P-256,
SHA-256); the public key is the base64 one its settings page shows. The check is the
``sendgrid`` library's own. A timestamp outside ``WEBHOOK_MAX_AGE`` of now is refused,
so a captured request cannot be replayed later; within it, a request delivered again
stores nothing new, because events are unique by their ``sg_event_id``.

A verified batch is read one event at a time (:func:`parse`), so its size in memory is
the body's, however many events it holds.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import time
from collections.abc import Iterator
from typing import Any

from sendgrid.helpers.eventwebhook import EventWebhook

from email_worker.tracking.events import DeliveryEvent, sendgrid_event

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
_MAX_SIGNATURE = 512  # a DER ECDSA P-256 signature is at most 72 bytes
_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")  # JSON's whitespace


class SignatureRefused(ValueError):
    """A request that is unsigned, forged, stale, or cannot be checked."""


class MalformedBatch(ValueError):
    """A verified body that is not a JSON array."""


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


def parse(body: bytes, received_at: dt.datetime) -> Iterator[DeliveryEvent]:
    """The events of a verified batch that this project knows, decoded as they are read.

    Raises :class:`MalformedBatch` when the body turns out not to be a JSON array.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedBatch("not UTF-8") from None
    for item in _array_items(text):
        event = sendgrid_event(item, received_at)
        if event is not None:
            yield event


def _array_items(text: str) -> Iterator[Any]:
    """Each value of the JSON array ``text``, one at a time, never the whole array at once."""
    index = _skip_space(text, 0)
    if not text.startswith("[", index):
        raise MalformedBatch("not a JSON array")
    index = _skip_space(text, index + 1)
    if not text.startswith("]", index):
        while True:
            try:
                item, index = _DECODER.raw_decode(text, index)
            except (ValueError, RecursionError):
                raise MalformedBatch("not JSON, or nested too deeply") from None
            yield item
            index = _skip_space(text, index)
            if text.startswith("]", index):
                break
            if not text.startswith(",", index):
                raise MalformedBatch("expected ',' or ']' in the array")
            index = _skip_space(text, index + 1)
    if _skip_space(text, index + 1) != len(text):
        raise MalformedBatch("data after the array")


def _skip_space(text: str, index: int) -> int:
    match = _SPACE.match(text, index)
    assert match is not None  # the pattern matches the empty string
    return match.end()
