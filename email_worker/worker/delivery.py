"""What a worker does with one message: validate, render, build, send, record.

The fast path sends the payload the message carries. The tracked path claims the
job's row (a fenced claim: every later transition names its ``claim_token``), sends,
and records the outcome; a worker whose claim was taken over changes nothing. An
email the provider accepted is never sent again because its record was late: the
record is retried briefly, then deferred to a message that only records.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from typing import Any

from celery.exceptions import Retry, SoftTimeLimitExceeded
from sqlalchemy.exc import SQLAlchemyError

from email_worker.config import HARD_LIMIT_MARGIN, Settings, get_settings
from email_worker.db import new_jobs, send_path, sent_recorder, suppressions, transitions
from email_worker.db.api_keys import TEST_SEND_FIELD
from email_worker.db.engines import get_engines
from email_worker.db.models import utcnow
from email_worker.db.primary_retry import with_pauses
from email_worker.db.session import primary_connection, primary_session, primary_statement
from email_worker.errors import (
    InvalidEmailRequest,
    PartialDeliveryError,
    PermanentError,
    TemplateRenderError,
    Throttled,
)
from email_worker.kinds import backoff_delay, find_kind
from email_worker.mime.content import RenderedEmail
from email_worker.mime.email_request import EmailRequest
from email_worker.mime.messages import OutgoingEmail, Sender, Unsubscribe, build_message
from email_worker.policy import suppression_list
from email_worker.policy.delivery_mode import split_by_mode
from email_worker.privacy import mask_address, redact_text
from email_worker.producer.publishing import check_request
from email_worker.producer.stored_jobs import DatabaseUnavailable, job_id_for, store_job
from email_worker.providers import SendResult, check_provider_choice, get_provider
from email_worker.providers.failover import send_through
from email_worker.rendering.renderer import (
    POSTAL_ADDRESS,
    UNSUBSCRIBE_URL,
    get_renderer,
    render_inline,
)
from email_worker.tracking import links, tokens
from email_worker.worker.retries import TRANSIENT

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


def deliver(task: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Send one email: a stored job when the message carries ``job_id``, else the payload.

    A transient failure of the fast path propagates: the task's ``autoretry_for``
    hands it to :meth:`EmailTask.retry`.
    """
    if "job_id" in kwargs:
        return deliver_job(task, kwargs)
    settings = get_settings()
    request = check_request(task.kind, (), kwargs, settings=settings)
    if request.tracked:
        # Published without this package's producer: store the job under the task id
        # first (a redelivery finds the same row), then send it tracked.
        job_id, _ = store_job(
            task.kind,
            request,
            scheduled_at=None,
            scheduled=False,
            job_id=job_id_for(task.request.id),
        )
        return deliver_job(task, {"job_id": str(job_id)})
    email = build_email(request, message_key=task.request.id, settings=settings)
    try:
        provider, result = send_out(email, request, settings=settings)
    except RecipientsSuppressed as exc:
        log.info("email skipped", extra={**task.outcome_fields(), "reason": str(exc)})
        return {"skipped": True, "suppressed": True}
    return {"provider": provider, "message_id": result.message_id, **result.summary()}


def deliver_job(task: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Claim a stored job, send it, and record the outcome on its row."""
    job_id, accepted = _job_message(kwargs)
    if accepted is not None:
        return _record_deferred(task, job_id, accepted)
    settings = get_settings()
    try:
        with primary_connection() as connection:
            job = send_path.claim(connection, job_id, lease_seconds(settings))
        if job is not None:
            payload, attempts_made = new_jobs.request_payload(job), job.retry_count or 0
            token = job.claim_token
    except SQLAlchemyError as exc:
        # Nothing was sent: the message is retried until the primary answers again.
        raise DatabaseUnavailable(
            f"cannot claim the job on the primary database ({type(exc).__name__})"
        ) from None
    if job is None:
        # Another worker has it, or it is finished, cancelled or not yet due.
        log.info(
            "email skipped",
            extra={**task.outcome_fields(), "reason": "job not claimable (taken, done or not due)"},
        )
        return {"job_id": str(job_id), "skipped": True}
    assert token is not None  # a claim always sets one
    test_send, fields = test_send_of(payload)
    try:
        request = check_request(task.kind, (), fields, settings=settings)
        email = build_email(request, message_key=str(job_id), settings=settings)
        provider, result = send_out(email, request, settings=settings, test_send=test_send)
    except Throttled as exc:
        return _wait_for_token(task, job_id, token, exc)
    except TRANSIENT as exc:
        return _retry_job(task, job_id, token, payload, attempts_made, exc, settings)
    except RecipientsSuppressed as exc:
        return _record_suppressed(task, job_id, token, exc)
    except Exception as exc:
        with primary_session() as session:
            transitions.mark_failed(session, job_id, error=reason(exc), claim_token=token)
        raise
    return _record_sent(task, job_id, token, provider, result)


def _record_suppressed(
    task: Any, job_id: uuid.UUID, token: uuid.UUID, exc: RecipientsSuppressed
) -> dict[str, Any]:
    """End the job as ``suppressed``: no provider was asked to send it."""
    with primary_session() as session:
        suppressions.mark_suppressed(session, job_id, claim_token=token)
    log.info("email skipped", extra={**task.outcome_fields(), "reason": str(exc)})
    return {"job_id": str(job_id), "skipped": True, "suppressed": True}


def _retry_job(
    task: Any,
    job_id: uuid.UUID,
    token: uuid.UUID,
    payload: dict[str, Any],
    attempts_made: int,
    exc: BaseException,
    settings: Settings,
) -> dict[str, Any]:
    """Count the failed attempt on the row, then retry, wait in the database, or fail."""
    countdown = task.backoff(attempts_made)
    with primary_session() as session:
        outcome = transitions.mark_retrying(
            session,
            job_id,
            claim_token=token,
            error=reason(exc),
            retry_in_seconds=countdown,
            payload=narrowed(payload, exc),
        )
        if outcome is transitions.RetryOutcome.NO_ATTEMPTS_LEFT:
            transitions.mark_failed(session, job_id, error=reason(exc), claim_token=token)
    if outcome is transitions.RetryOutcome.STALE:
        log.warning(
            "email skipped",
            extra={
                **task.outcome_fields(),
                "reason": f"claim taken over; the new owner records it: {reason(exc)}",
            },
        )
        return {"job_id": str(job_id), "skipped": True}
    if outcome is transitions.RetryOutcome.NO_ATTEMPTS_LEFT:
        raise RetriesExhausted(reason(exc)) from exc
    log_retry(task, exc, countdown)
    if countdown > settings.schedule_threshold:
        # Beat's dispatcher publishes it when due: the broker would redeliver so long a wait.
        raise Retry(exc=exc, when=countdown)
    raise task.retry(kwargs={"job_id": str(job_id)}, exc=exc, countdown=countdown)


def _wait_for_token(
    task: Any, job_id: uuid.UUID, token: uuid.UUID, exc: Throttled
) -> dict[str, Any]:
    """Give the claim back uncounted and try again when the rate limit has a token."""
    with primary_statement() as session:
        released = transitions.release_claim(
            session, job_id, claim_token=token, retry_in_seconds=exc.retry_after
        )
    if not released:
        return {"job_id": str(job_id), "skipped": True}
    raise task.retry(kwargs={"job_id": str(job_id)}, exc=exc, countdown=exc.retry_after)


def _record_sent(
    task: Any, job_id: uuid.UUID, token: uuid.UUID, provider: str, result: SendResult
) -> dict[str, Any]:
    """Record the provider's acceptance; if the primary is away, retry briefly, then defer."""
    message_id = result.message_id
    sent = {"job_id": str(job_id), "provider": provider, "message_id": message_id}
    sent.update(result.summary())
    recipients = recipient_results(result)
    background = sent_recorder.recorder()
    if background is not None and get_engines().primary.dialect.name == "postgresql":
        # A pool process: its thread writes the record while this process sends the next.
        record = send_path.SentRecord(job_id, token, provider, message_id, recipients, utcnow())
        background.submit(record, _deferral(task))
        return sent

    def write() -> None:
        with primary_statement() as session:
            send_path.mark_sent(
                session,
                job_id,
                claim_token=token,
                provider=provider,
                provider_message_id=message_id,
                recipient_results=recipients,
            )

    try:
        with_pauses(write)
        return sent
    except SQLAlchemyError as exc:
        error = exc
    # The email is out: whatever happens now, it must not be sent again. A message that
    # only records carries the acceptance until the primary takes it.
    log.info("email sent", extra={**task.outcome_fields(), **sent, "record": "deferred"})
    log.warning(
        "recording a sent email is deferred: the primary database is unavailable",
        extra={"job_id": str(job_id), "error": type(error).__name__},
    )
    accepted = _accepted(
        send_path.SentRecord(job_id, token, provider, message_id, recipients, utcnow())
    )
    raise task.retry(kwargs={"job_id": str(job_id), "accepted": accepted}, exc=error, countdown=1.0)


def _accepted(record: send_path.SentRecord) -> dict[str, Any]:
    """A record of ``sent`` as a deferred-record message carries it (see _record_deferred)."""
    return {
        "claim_token": str(record.claim_token),
        "provider": record.provider,
        "message_id": record.message_id,
        "recipients": record.recipient_results,
    }


def _deferral(task: Any) -> sent_recorder.Defer:
    """How the recorder's thread hands a record the primary did not take to a message."""
    app, name = task.app, task.name
    queue = (task.request.delivery_info or {}).get("routing_key")

    def defer(record: send_path.SentRecord) -> None:
        kwargs = {"job_id": str(record.job_id), "accepted": _accepted(record)}
        options = {"queue": queue} if queue else {}
        app.send_task(name, kwargs=kwargs, countdown=1.0, **options)

    return defer


def _record_deferred(task: Any, job_id: uuid.UUID, accepted: dict[str, Any]) -> dict[str, Any]:
    """Apply a deferred record of a sent email; retry while the primary is still away."""
    try:
        with primary_statement() as session:
            moved = send_path.mark_sent(
                session,
                job_id,
                claim_token=uuid.UUID(accepted["claim_token"]),
                provider=accepted["provider"],
                provider_message_id=accepted.get("message_id"),
                recipient_results=_results_of(accepted.get("recipients")),
            )
    except SQLAlchemyError as exc:
        countdown = backoff_delay(task.request.retries, base=2.0, cap=30.0)
        raise task.retry(exc=exc, countdown=countdown) from None
    log.info(
        "deferred record of a sent email stored", extra={"job_id": str(job_id), "moved": moved}
    )
    return {"job_id": str(job_id), "skipped": True}


def test_send_of(payload: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    """Whether a stored request is a test key's send, and the request without that mark.

    Only the web app writes the mark, into the job it stores; a request that carries it
    in its own fields is refused by validation as an unknown argument.
    """
    if TEST_SEND_FIELD not in payload:
        return False, payload
    fields = dict(payload)
    return fields.pop(TEST_SEND_FIELD) is True, fields


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
            if category in suppressions.MARKETING_CATEGORIES and settings.sender_postal_address:
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
    except SQLAlchemyError as exc:
        if category in suppressions.MARKETING_CATEGORIES:
            raise DatabaseUnavailable(
                f"cannot check the suppression list ({type(exc).__name__})"
            ) from None
        log.warning(
            "suppression list not checked: the primary database is unavailable",
            extra={"error": type(exc).__name__, "category": category},
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
    if category not in suppressions.MARKETING_CATEGORIES or not keys or not request.to:
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


def recipient_results(result: SendResult) -> dict[str, Any]:
    """What a job keeps of a send's recipients: how many took it, who refused it and why."""
    return {
        "accepted": len(result.accepted),
        "refused": {mask_address(a): redact_text(why) for a, why in result.refused.items()},
    }


def _results_of(value: Any) -> dict[str, Any] | None:
    # From a record-only message: another service could publish one, so check its shape.
    if not isinstance(value, dict) or set(value) != {"accepted", "refused"}:
        return None
    accepted, refused = value["accepted"], value["refused"]
    if not isinstance(accepted, int) or not isinstance(refused, dict) or len(refused) > 1000:
        return None
    return {"accepted": accepted, "refused": {str(k): str(v)[:500] for k, v in refused.items()}}


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


def _job_message(kwargs: dict[str, Any]) -> tuple[uuid.UUID, dict[str, Any] | None]:
    if set(kwargs) - {"job_id", "accepted"}:
        raise InvalidEmailRequest("job_id", "a stored job's message carries only its job_id")
    try:
        job_id = uuid.UUID(str(kwargs["job_id"]))
    except ValueError:
        raise InvalidEmailRequest("job_id", "not a job id") from None
    accepted = kwargs.get("accepted")
    if accepted is not None and not (
        isinstance(accepted, dict) and {"claim_token", "provider"} <= set(accepted)
    ):
        raise InvalidEmailRequest("accepted", "not a record of a sent email")
    return job_id, accepted
