"""The tracked path: a stored job claimed, sent, and its outcome recorded on its row.

A message that carries ``job_id`` (a tracked send, a scheduled one, a retry kept in the
database) claims the job's row (a fenced claim: every later transition names its
``claim_token``), sends, and records the outcome; a worker whose claim was taken over
changes nothing. An email the provider accepted is never sent again because its record
was late: the record is retried briefly, then deferred to a message that only records.

Imported by :func:`email_worker.worker.task_body.deliver` with a pool process's first
stored job: a process that only sends fast-path emails never loads it, nor SQLAlchemy.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery.exceptions import Retry
from sqlalchemy.exc import SQLAlchemyError

from email_worker.config import Settings, get_settings
from email_worker.db import new_jobs, send_path, sent_recorder, suppressions, transitions
from email_worker.db.engines import get_engines
from email_worker.db.job_rows import TEST_SEND_FIELD
from email_worker.db.models import utcnow
from email_worker.db.primary_retry import with_pauses
from email_worker.db.session import primary_connection, primary_session, primary_statement
from email_worker.errors import InvalidEmailRequest, Throttled
from email_worker.kinds import backoff_delay
from email_worker.mime.email_request import EmailRequest
from email_worker.privacy import mask_address, redact_text
from email_worker.producer.publishing import check_request
from email_worker.producer.stored_jobs import DatabaseUnavailable, job_id_for, store_job
from email_worker.providers import SendResult
from email_worker.worker.delivery import (
    RecipientsSuppressed,
    RetriesExhausted,
    build_email,
    lease_seconds,
    log_retry,
    narrowed,
    reason,
    send_out,
)
from email_worker.worker.retries import TRANSIENT

log = logging.getLogger("email_worker.tasks")


def deliver_unstored(task: Any, request: EmailRequest) -> dict[str, Any]:
    """A tracked request published without this package's producer: store it, then send it.

    The job is stored under the task id first (a redelivery finds the same row).
    """
    job_id, _ = store_job(
        task.kind,
        request,
        scheduled_at=None,
        scheduled=False,
        job_id=job_id_for(task.request.id),
    )
    return deliver_job(task, {"job_id": str(job_id)})


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
