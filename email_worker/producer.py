"""The producer's side of a send: validate, then publish (later: track or schedule).

Called from :meth:`EmailWorkerCelery.send_task` for every email task, so a bad
payload raises :class:`InvalidEmailRequest` in the producer's process and nothing
reaches the queue.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from celery.result import AsyncResult

from email_worker.config import get_settings
from email_worker.errors import InvalidEmailRequest
from email_worker.kinds import Kind
from email_worker.privacy import redacted_request
from email_worker.rendering import get_renderer
from email_worker.validation import EmailRequest, validate_request


@dataclass
class PreparedSend:
    """What to publish, or the result to hand back when nothing is published now."""

    kwargs: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)
    result: AsyncResult | None = None


def check_request(kind: Kind, args: Any, kwargs: dict[str, Any]) -> EmailRequest:
    """Validate a send request for ``kind`` against the templates this process can see."""
    if args:
        raise InvalidEmailRequest("args", "email tasks take keyword arguments only")
    return validate_request(
        kind,
        kwargs,
        template_exists=get_renderer().exists,
        max_message_bytes=get_settings().max_message_bytes,
    )


def delay_seconds(options: dict[str, Any], now: dt.datetime | None = None) -> float:
    """How far in the future a send was asked for, from ``countdown`` or ``eta``."""
    now = now or dt.datetime.now(dt.UTC)
    countdown, eta = options.get("countdown"), options.get("eta")
    if countdown is not None and eta is not None:
        raise InvalidEmailRequest("eta", "give countdown or eta, not both")
    if countdown is not None:
        try:
            return float(countdown)
        except (TypeError, ValueError):
            raise InvalidEmailRequest("countdown", "expected a number of seconds") from None
    if eta is None:
        return 0.0
    if isinstance(eta, str):
        try:
            eta = dt.datetime.fromisoformat(eta)
        except ValueError:
            raise InvalidEmailRequest("eta", "expected an ISO 8601 date and time") from None
    if not isinstance(eta, dt.datetime):
        raise InvalidEmailRequest("eta", "expected a datetime")
    if eta.tzinfo is None:
        eta = eta.replace(tzinfo=dt.UTC)  # Celery reads a naive eta as UTC too (enable_utc)
    return (eta - now).total_seconds()


def prepare_send(
    app: Any, kind: Kind, args: Any, kwargs: dict[str, Any], options: dict[str, Any]
) -> PreparedSend:
    """Validate a send and decide how it is published."""
    request = check_request(kind, args, kwargs)
    settings = get_settings()
    delay = delay_seconds(options)
    if delay > settings.schedule_threshold:
        raise InvalidEmailRequest(
            "countdown",
            f"{delay:.0f}s is beyond SCHEDULE_THRESHOLD ({settings.schedule_threshold:.0f}s); "
            "a delay that long needs the database",
        )
    payload = request.to_payload()
    options = dict(options)
    options.setdefault("queue", settings.queues[request.priority])
    options.setdefault("ignore_result", True)
    options.setdefault("kwargsrepr", repr(redacted_request(payload)))
    return PreparedSend(kwargs=payload, options=options)
