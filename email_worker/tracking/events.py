"""One vocabulary for delivery events, and the SendGrid and SES events mapped onto it; pure.

A provider's event becomes a :class:`DeliveryEvent`: what happened (one of
:data:`EVENT_TYPES`), to which message and recipient, when, and the id the provider
gave it, which de-duplicates it. Anything these functions do not recognise (an event
type SendGrid or SES adds later, a field of the wrong type) is skipped, never raised.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

QUEUED, SENT, DELIVERED, DEFERRED, BOUNCED = "queued", "sent", "delivered", "deferred", "bounced"
DROPPED, REJECTED, OPENED, CLICKED = "dropped", "rejected", "opened", "clicked"
COMPLAINED, UNSUBSCRIBED = "complained", "unsubscribed"
EVENT_TYPES = frozenset(
    {QUEUED, SENT, DELIVERED, DEFERRED, BOUNCED, DROPPED, REJECTED, OPENED, CLICKED}
    | {COMPLAINED, UNSUBSCRIBED}
)
HARD, SOFT = "hard", "soft"
SENDGRID, SES = "sendgrid", "ses"
ID_ARG = "email_worker_id"  # the custom argument (SendGrid) or tag (SES) holding our id

_MAX_ID = 255  # the width of the id, message id and recipient columns
_MAX_REASON = 1000

_SENDGRID_TYPES = {
    "processed": QUEUED,
    "dropped": DROPPED,
    "delivered": DELIVERED,
    "deferred": DEFERRED,
    "bounce": BOUNCED,
    "open": OPENED,
    "click": CLICKED,
    "spamreport": COMPLAINED,
    "unsubscribe": UNSUBSCRIBED,
    "group_unsubscribe": UNSUBSCRIBED,
}
_SES_TYPES = {
    "Send": SENT,
    "Delivery": DELIVERED,
    "Bounce": BOUNCED,
    "Complaint": COMPLAINED,
    "Reject": REJECTED,
    "Open": OPENED,
    "Click": CLICKED,
    "DeliveryDelay": DEFERRED,
    "Rendering Failure": REJECTED,
}
# The object of an SES event that holds its details, and the list of recipients in it.
_SES_DETAILS = {
    "Delivery": ("delivery", "recipients"),
    "Bounce": ("bounce", "bouncedRecipients"),
    "Complaint": ("complaint", "complainedRecipients"),
    "DeliveryDelay": ("deliveryDelay", "delayedRecipients"),
    "Open": ("open", None),
    "Click": ("click", None),
    "Reject": ("reject", None),
    "Rendering Failure": ("failure", None),
    "Send": ("send", None),
}


@dataclass(frozen=True)
class DeliveryEvent:
    """One provider event in this project's vocabulary."""

    provider: str
    provider_event_id: str
    event_type: str
    occurred_at: dt.datetime  # naive UTC
    recipient: str | None = None
    provider_message_id: str | None = None
    bounce_type: str | None = None
    machine_open: bool = False
    payload: Any = field(default=None, compare=False)


def sendgrid_events(batch: Any, received_at: dt.datetime) -> list[DeliveryEvent]:
    """The events of a SendGrid webhook batch (a JSON array) that this project knows."""
    if not isinstance(batch, list):
        return []
    found = (sendgrid_event(item, received_at) for item in batch)
    return [event for event in found if event is not None]


def sendgrid_event(item: Any, received_at: dt.datetime) -> DeliveryEvent | None:
    """One SendGrid event, or None when it is not one this project records."""
    if not isinstance(item, Mapping):
        return None
    event_type = _SENDGRID_TYPES.get(_text(item.get("event")) or "")
    event_id = _identifier(item.get("sg_event_id"))
    if event_type is None or event_id is None:
        return None
    message_id = _text(item.get("sg_message_id"))
    bounce_type = None
    if event_type == BOUNCED:
        bounce_type = SOFT if item.get("type") == "blocked" else HARD
    return DeliveryEvent(
        provider=SENDGRID,
        provider_event_id=event_id,
        event_type=event_type,
        occurred_at=_from_unix(item.get("timestamp")) or received_at,
        recipient=_address(item.get("email")),
        # The X-Message-Id the send returned is sg_message_id up to the first dot.
        provider_message_id=_identifier(message_id.split(".", 1)[0]) if message_id else None,
        bounce_type=bounce_type,
        machine_open=event_type == OPENED and item.get("sg_machine_open") is True,
        payload=clean(item),
    )


def ses_events(
    notification: Any, sns_message_id: str, received_at: dt.datetime
) -> list[DeliveryEvent]:
    """The events of one SES event-publishing record or notification, one per recipient."""
    if not isinstance(notification, Mapping) or _identifier(sns_message_id + "#00000") is None:
        return []
    kind = _text(notification.get("eventType") or notification.get("notificationType"))
    event_type = _SES_TYPES.get(kind or "")
    mail = notification.get("mail")
    if event_type is None or kind is None or not isinstance(mail, Mapping):
        return []
    details_key, recipients_key = _SES_DETAILS[kind]
    details = notification.get(details_key)
    details = details if isinstance(details, Mapping) else {}
    recipients = _ses_recipients(details.get(recipients_key) if recipients_key else None, mail)
    bounce_type = None
    if event_type == BOUNCED:
        bounce_type = HARD if details.get("bounceType") == "Permanent" else SOFT
    occurred_at = (
        _from_iso(details.get("timestamp")) or _from_iso(mail.get("timestamp")) or received_at
    )
    common = {
        "provider": SES,
        "event_type": event_type,
        "occurred_at": occurred_at,
        "provider_message_id": _identifier(mail.get("messageId")),
        "bounce_type": bounce_type,
        "payload": clean(notification),
    }
    several = len(recipients) > 1
    return [
        DeliveryEvent(
            provider_event_id=f"{sns_message_id}#{index}" if several else sns_message_id,
            recipient=recipient,
            **common,
        )
        for index, recipient in enumerate(recipients)
    ]


def our_id(provider: str, payload: Any) -> uuid.UUID | None:
    """The ``email_worker_id`` a stored event's email was sent with (a job id when tracked)."""
    if not isinstance(payload, Mapping):
        return None
    if provider == SENDGRID:
        # SendGrid hands custom arguments back as fields of the event itself.
        found = payload.get(ID_ARG)
        if found is None:
            found = _mapping(payload.get("custom_args")).get(ID_ARG)
        return _uuid(found)
    if provider == SES:
        return _uuid(_first(_mapping(_mapping(payload.get("mail")).get("tags")).get(ID_ARG)))
    return None


def reason_of(provider: str, payload: Any) -> str | None:
    """Why a stored event's message was dropped, bounced, rejected or deferred, if it says."""
    payload = _mapping(payload)
    if provider == SENDGRID:
        return _reason(payload.get("reason") or payload.get("response"))
    kind = _text(payload.get("eventType") or payload.get("notificationType"))
    if provider != SES or kind not in _SES_DETAILS:
        return None
    return _reason(_ses_reason(kind, _mapping(payload.get(_SES_DETAILS[kind][0]))))


def _ses_recipients(listed: Any, mail: Mapping[str, Any]) -> list[str | None]:
    """Who an SES event is about: its own recipient list, else the mail's destination."""
    if isinstance(listed, list) and listed:
        return [_one(recipient) for recipient in listed]
    destination = mail.get("destination")
    if isinstance(destination, list) and len(destination) == 1:
        return [_address(destination[0])]
    return [None]  # an open or click of a message to several people: nobody in particular


def _one(recipient: Any) -> str | None:
    if isinstance(recipient, Mapping):
        return _address(recipient.get("emailAddress"))
    return _address(recipient)


def _ses_reason(kind: str | None, details: Mapping[str, Any]) -> Any:
    if kind == "Bounce":
        listed = details.get("bouncedRecipients")
        first = listed[0] if isinstance(listed, list) and listed else {}
        return _mapping(first).get("diagnosticCode") or details.get("bounceSubType")
    if kind == "Reject":
        return details.get("reason")
    if kind == "Rendering Failure":
        return details.get("errorMessage")
    if kind == "DeliveryDelay":
        return details.get("delayType")
    return None


def clean(value: Any, depth: int = 0) -> Any:
    """A JSON value PostgreSQL can store (see :func:`storable`), at most 32 deep."""
    if depth > 32:
        return None
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, Mapping):
        return {storable(str(k)): clean(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [clean(v, depth + 1) for v in value]
    return value


def storable(text: str) -> str:
    """``text`` without NUL characters or lone surrogates, which PostgreSQL refuses.

    JSON may carry both (``\\u0000``, ``\\ud800``); a batch holding one would otherwise
    fail to store every time its provider delivered it again.
    """
    text = text.replace("\x00", "")
    if text.isascii():
        return text
    return text.encode("utf-8", "replace").decode("utf-8")


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else None


def _text(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    return storable(value) or None


def _identifier(value: Any) -> str | None:
    if isinstance(value, str) and "\x00" in value:
        return None  # an id is kept as given or not at all
    text = _text(value)
    return text if text is not None and len(text) <= _MAX_ID else None


def _address(value: Any) -> str | None:
    text = _identifier(value)
    return text.strip().lower() if text and "@" in text else None


def _reason(value: Any) -> str | None:
    text = _text(value)
    return text[:_MAX_REASON] if text else None


def _uuid(value: Any) -> uuid.UUID | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _from_unix(value: Any) -> dt.datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return dt.datetime.fromtimestamp(value, dt.UTC).replace(tzinfo=None)
    except (OverflowError, OSError, ValueError):
        return None


def _from_iso(value: Any) -> dt.datetime | None:
    text = _text(value)
    if text is None or len(text) > 64:
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return moment
    try:
        return moment.astimezone(dt.UTC).replace(tzinfo=None)
    except OverflowError:
        return None
