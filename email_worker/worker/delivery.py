"""What a worker does with one message: validate, render, build, send.

The fast path sends the payload the message carries. On its way to the provider it
reads the suppression list and the stored templates, through psycopg on PostgreSQL,
and writes nothing: a pool process that sends only fast-path emails never imports
SQLAlchemy. A message that carries a stored job's id (a tracked send, a scheduled one,
a retry kept in the database) goes to :mod:`email_worker.worker.tracked_delivery`,
imported with the first such message (:mod:`email_worker.worker.task_body` chooses),
which claims the job, sends it as this module does, and records the outcome on its row.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from email_worker.config import HARD_LIMIT_MARGIN, Settings, get_settings
from email_worker.errors import PartialDeliveryError, PermanentError, TemplateRenderError, Throttled
from email_worker.kinds import MARKETING_CATEGORIES, find_kind
from email_worker.mime.content import RenderedEmail
from email_worker.mime.email_request import EmailRequest
from email_worker.mime.messages import OutgoingEmail, Sender, Unsubscribe, build_message
from email_worker.policy import suppression_list
from email_worker.policy.delivery_mode import split_by_mode
from email_worker.privacy import redact_text
from email_worker.producer.stored_jobs import DatabaseUnavailable
from email_worker.providers import SendResult, check_provider_choice, get_provider
from email_worker.providers.failover import send_through
from email_worker.rendering.renderer import (
    POSTAL_ADDRESS,
    UNSUBSCRIBE_URL,
    get_renderer,
    render_inline,
)
from email_worker.tracking import links, tokens

log = logging.getLogger("email_worker.tasks")

# Seconds past the hard time limit before a lost worker's lease may be reaped.
LEASE_MARGIN = 15.0


class RetriesExhausted(PermanentError):
    """A transient failure on the last attempt a job had: it is failed, not retried."""


class RecipientsSuppressed(PermanentError):
    """Every recipient of the email is on the suppression list: nothing is sent."""


def lease_seconds(settings: Settings) -> float:
    """How long a claim holds a job: the send's hard time limit, and a margin."""
    return settings.process_timeout + HARD_LIMIT_MARGIN + LEASE_MARGIN


def deliver_payload(task: Any, request: EmailRequest, settings: Settings) -> dict[str, Any]:
    """Send the email a fast-path message carries (already checked: ``request``).

    A transient failure propagates: the task's ``autoretry_for`` hands it to
    :meth:`EmailTask.retry`.
    """
    email = build_email(request, message_key=task.request.id, settings=settings)
    try:
        provider, result = send_out(email, request, settings=settings)
    except RecipientsSuppressed as exc:
        log.info("email skipped", extra={**task.outcome_fields(), "reason": str(exc)})
        return {"skipped": True, "suppressed": True}
    return {"provider": provider, "message_id": result.message_id, **result.summary()}


def send_out(
    email: OutgoingEmail,
    request: EmailRequest,
    *,
    settings: Settings,
    category: str | None = None,
    test_send: bool = False,
) -> tuple[str, SendResult]:
    """Send through the provider chain, holding in the outbox what DELIVERY_MODE keeps back.

    Suppressed recipients are dropped from the envelope first (``category`` defaults to
    the kind's). Returns the provider that sent (``outbox`` when everything was held)
    and its result. A test send (a test API key's) goes to the outbox and nowhere else,
    whatever provider the request or the settings name.
    """
    check_provider_choice(request.provider, settings)  # a producer cannot see our settings
    email = without_suppressed(email, category or category_of(request))
    if test_send:
        return "outbox", get_provider("outbox").send(email)
    live, held = split_by_mode(email, settings)
    if held is not None:
        kept = get_provider("outbox").send(held)
        if live is None:
            return "outbox", kept  # the task logs "email held"
        log.info(
            "recipients held in the outbox by DELIVERY_MODE",
            extra={"mode": settings.delivery_mode, "held": len(held.envelope.recipients)},
        )
    assert live is not None
    kind = find_kind(request.kind)
    chain = settings.provider_chain(
        request.provider
        or settings.kind_provider(request.kind)
        or (kind.provider if kind is not None else None)
    )
    return send_through(live, chain, settings, priority=request.priority)


def build_email(
    request: EmailRequest, *, message_key: str, settings: Settings | None = None
) -> OutgoingEmail:
    """Render (or take the inline content) and build the message.

    ``settings`` are those the task read at its entry (by default, this process's).
    """
    settings = get_settings() if settings is None else settings
    category = category_of(request)
    unsubscribe = unsubscribe_for(request, message_key, category, settings)
    try:
        if request.template_id:
            data = request.data
            if unsubscribe is not None:
                data = {UNSUBSCRIBE_URL: unsubscribe.url, **data}
            if category in MARKETING_CATEGORIES and settings.sender_postal_address:
                data = {POSTAL_ADDRESS: settings.sender_postal_address, **data}
            content = get_renderer().render(request.template_id, data)
        else:
            content = render_inline(request.subject or "", request.html, request.text)
    except SoftTimeLimitExceeded:
        # A template that runs out the clock will do so again: not worth a retry.
        raise TemplateRenderError(
            f"rendering took longer than PROCESS_TIMEOUT ({settings.process_timeout:g}s)"
        ) from None
    email = build_message(
        request,
        with_tracking(content, request, message_key, settings),
        sender=Sender(settings.email_from, settings.email_from_name),
        message_id_domain=settings.message_id_domain,
        message_key=message_key,
        unsubscribe=unsubscribe,
    )
    if len(email.as_bytes()) > settings.max_message_bytes:
        raise PermanentError(
            f"message is larger than MAX_MESSAGE_BYTES ({settings.max_message_bytes})"
        )
    return email


def category_of(request: EmailRequest) -> str:
    """The category of the request's kind; a label the registry does not know is transactional."""
    kind = find_kind(request.kind)
    return kind.category if kind is not None else "transactional"


def without_suppressed(email: OutgoingEmail, category: str) -> OutgoingEmail:
    """The email with its envelope narrowed to the recipients not suppressed for ``category``.

    Raises :class:`RecipientsSuppressed` when none is left. When the database cannot be
    asked, a marketing or bulk email waits for it; any other is sent (one more hard
    bounce costs less than a password reset that never comes).
    """
    recipients = email.envelope.recipients
    try:
        blocked = suppression_list.suppressed(recipients, category)
    except suppression_list.ListUnavailable as exc:
        if category in MARKETING_CATEGORIES:
            raise DatabaseUnavailable(f"cannot check the suppression list ({exc})") from None
        log.warning(
            "suppression list not checked: the primary database is unavailable",
            extra={"error": str(exc), "category": category},
        )
        return email
    if not blocked:
        return email
    rest = tuple(r for r in recipients if r.lower() not in blocked)
    if not rest:
        raise RecipientsSuppressed("every recipient is on the suppression list")
    log.info("suppressed recipients left out", extra={"suppressed": len(recipients) - len(rest)})
    return dataclasses.replace(email, envelope=dataclasses.replace(email.envelope, recipients=rest))


def unsubscribe_for(
    request: EmailRequest, message_key: str, category: str, settings: Settings
) -> Unsubscribe | None:
    """List-Unsubscribe for a marketing or bulk email, for its first To address.

    None for other categories, and when TRACKING_SECRET or PUBLIC_URL is unset (no token
    can be signed, or no address holds the link); live mode refuses such emails before.
    """
    keys = tokens.signing_keys(settings.tracking_secret.reveal())
    if category not in MARKETING_CATEGORIES or not keys or not request.to:
        return None
    if not settings.public_url:
        return None
    token = tokens.sign_token(keys, tokens.UNSUBSCRIBE, message_key, request.to[0].lower())
    return Unsubscribe(f"{_public_url(settings)}/u/{token}", settings.unsubscribe_mailto)


def opens_clicks_tracked(request: EmailRequest, settings: Settings) -> bool:
    """Whether this email's links and opens are tracked.

    TRACK_OPENS_CLICKS, TRACKING_SECRET and PUBLIC_URL must be set, the kind must track (by default
    every category but security), and the request's ``metadata`` must not hold
    ``"track_opens_clicks": false``.
    """
    kind = find_kind(request.kind)
    if kind is None:
        by_kind = True
    elif kind.track_opens_clicks is None:
        by_kind = kind.category != "security"
    else:
        by_kind = kind.track_opens_clicks
    return (
        by_kind
        and settings.track_opens_clicks
        and bool(settings.tracking_secret)
        and bool(settings.public_url)
        and request.metadata.get("track_opens_clicks") is not False
    )


def with_tracking(
    content: RenderedEmail, request: EmailRequest, message_key: str, settings: Settings
) -> RenderedEmail:
    """The content with tracked links and an open pixel in its HTML part; text unchanged."""
    if content.html is None or not message_key or not opens_clicks_tracked(request, settings):
        return content
    keys = tokens.signing_keys(settings.tracking_secret.reveal())
    base = _public_url(settings)
    own = (f"{base}/u/", f"{base}/t/")

    def click_url(target: str) -> str | None:
        if target.startswith(own):
            return None  # the unsubscribe link, or one already tracked
        return f"{base}/t/c/{tokens.sign_token(keys, tokens.CLICK, message_key, target)}"

    pixel = f"{base}/t/o/{tokens.sign_token(keys, tokens.OPEN, message_key)}"
    html = links.track_html(content.html, click_url=click_url, pixel_url=pixel)
    return dataclasses.replace(content, html=html)


def _public_url(settings: Settings) -> str:
    return settings.public_url.rstrip("/")


def narrowed(payload: dict[str, Any], exc: BaseException | None) -> dict[str, Any] | None:
    """The payload for a retry after a partial delivery: only the recipients still to reach."""
    if not isinstance(exc, PartialDeliveryError):
        return None
    return {**payload, "only_recipients": list(exc.retry_recipients)}


def reason(exc: BaseException) -> str:
    """The failure as it may be logged and stored: addresses masked."""
    return redact_text(str(exc)) or type(exc).__name__


def log_retry(task: Any, exc: BaseException, countdown: float) -> None:
    """One line per retry, with what identifies the email and never its recipient."""
    waiting = isinstance(exc, Throttled)  # no failure: the send waits for its booked token
    log.log(
        logging.INFO if waiting else logging.WARNING,
        "email waits for a rate limit token" if waiting else "email send failed, retrying",
        extra={
            **task.outcome_fields(),
            "provider": getattr(exc, "provider", None) or None,
            "retry_in_s": round(countdown, 2),
            "reason": reason(exc),
        },
    )
