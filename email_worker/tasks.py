"""The email tasks: ``send_email`` and one ``send_<kind>`` per registered kind.

A task holds no logic of its own: :func:`deliver` validates, renders, builds and
sends, and is the one place where an error is mapped to retry or fail.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
import uuid
from typing import Any, NoReturn

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from email_worker.celery_app import app
from email_worker.config import get_settings
from email_worker.db import jobs
from email_worker.db.session import primary_session
from email_worker.errors import (
    AccountError,
    InvalidEmailRequest,
    PartialDeliveryError,
    PermanentError,
    TransientError,
)
from email_worker.kinds import Kind, all_kinds, backoff_delay
from email_worker.messages import OutgoingEmail, Sender, build_message
from email_worker.privacy import redact_text
from email_worker.producer import DatabaseUnavailable, check_request, store_job
from email_worker.providers import Provider, get_provider
from email_worker.rendering import get_renderer, render_inline
from email_worker.validation import EmailRequest

log = logging.getLogger("email_worker.tasks")

# Failures worth another attempt; everything else fails the send at once.
TRANSIENT = (TransientError, SoftTimeLimitExceeded)


class EmailTask(Task):  # type: ignore[misc]
    """Base of every email task: the same timing and outcome logging for all kinds."""

    kind: Kind
    typing = False  # the payload is checked by validation, which names the bad field
    Request = "email_worker.task_request:EmailTaskRequest"

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        """Note when the attempt started, for the duration in the outcome log."""
        self.request.started_at = time.monotonic()

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        """Log the delivery with what identifies it, never the recipient."""
        if not retval.get("skipped"):  # a skipped duplicate was logged where it was seen
            log.info("email sent", extra={**self._fields(task_id), **retval})

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        """Log the final failure and its reason."""
        level = logging.CRITICAL if isinstance(exc, AccountError) else logging.ERROR
        log.log(
            level,
            "email failed",
            extra={
                **self._fields(task_id),
                "error_type": type(exc).__name__,
                "reason": redact_text(str(exc)),
            },
        )

    def _fields(self, task_id: str) -> dict[str, Any]:
        started = getattr(self.request, "started_at", None)
        return {
            "task_id": task_id,
            "kind": self.kind.name,
            "attempt": self.request.retries + 1,
            "duration_ms": round((time.monotonic() - started) * 1000, 1) if started else None,
        }


def deliver(task: EmailTask, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Send one email: a stored job when the message carries ``job_id``, else the payload."""
    if "job_id" in kwargs:
        return deliver_job(task, kwargs)
    request = check_request(task.kind, (), kwargs)
    if request.tracked:
        # Published without this package's producer: store the job first, then send it
        # tracked, so it is recorded and its idempotency key honoured all the same.
        try:
            job, _ = store_job(task.kind, request, scheduled_at=None, scheduled=False)
        except DatabaseUnavailable as exc:
            _retry_payload(task, exc)
        return deliver_job(task, {"job_id": str(job.id)})
    email, provider = _build(request, message_key=task.request.id)
    try:
        message_id = provider.send(email)
    except TRANSIENT as exc:
        _retry_payload(task, exc, _narrowed(kwargs, exc))
    return {"provider": provider.name, "message_id": message_id}


def _retry_payload(
    task: EmailTask, exc: BaseException, kwargs: dict[str, Any] | None = None
) -> NoReturn:
    """Retry a fast-path send later with backoff, or give up after the kind's limit."""
    if task.request.retries >= _max_retries(task.kind):
        raise exc
    countdown = _backoff(task.kind, task.request.retries)
    _log_retry(task, exc, countdown)
    raise task.retry(
        kwargs=kwargs, exc=exc, countdown=countdown, max_retries=_max_retries(task.kind)
    ) from None


def _narrowed(payload: dict[str, Any], exc: BaseException) -> dict[str, Any] | None:
    """The payload for a retry after a partial delivery: only the recipients still to reach."""
    if not isinstance(exc, PartialDeliveryError):
        return None
    return {**payload, "only_recipients": list(exc.retry_recipients)}


def deliver_job(task: EmailTask, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Claim a stored job, send it, and record the outcome on its row."""
    job_id = _job_id(kwargs)
    settings = get_settings()
    with primary_session() as session:
        job = jobs.claim_job(session, job_id, lease_seconds=settings.process_timeout * 2 + 30)
        if job is not None:
            payload, attempts_made = dict(job.payload or {}), job.retry_count
    if job is None:
        # Another worker has it, or it is finished, cancelled or not yet due.
        log.info("job not claimable; nothing to do", extra={"job_id": str(job_id)})
        return {"job_id": str(job_id), "skipped": True}
    try:
        request = check_request(task.kind, (), payload)
        email, provider = _build(request, message_key=str(job_id))
        message_id = provider.send(email)
    except TRANSIENT as exc:
        countdown = _backoff(task.kind, attempts_made)
        next_attempt = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(
            seconds=countdown
        )
        with primary_session() as session:
            retrying = jobs.mark_retrying(
                session,
                job_id,
                error=_reason(exc),
                next_attempt_at=next_attempt,
                payload=_narrowed(payload, exc),
            )
            if not retrying:
                jobs.mark_failed(session, job_id, error=_reason(exc))
        if not retrying:
            raise
        _log_retry(task, exc, countdown)
        raise task.retry(
            kwargs={"job_id": str(job_id)}, exc=exc, countdown=countdown, max_retries=None
        ) from None
    except Exception as exc:
        with primary_session() as session:
            jobs.mark_failed(session, job_id, error=_reason(exc))
        raise
    with primary_session() as session:
        jobs.mark_sent(session, job_id, provider=provider.name, provider_message_id=message_id)
    return {"job_id": str(job_id), "provider": provider.name, "message_id": message_id}


def _build(request: EmailRequest, *, message_key: str) -> tuple[OutgoingEmail, Provider]:
    settings = get_settings()
    if request.template_id:
        content = get_renderer().render(request.template_id, request.data)
    else:
        content = render_inline(request.subject or "", request.html, request.text)
    email = build_message(
        request,
        content,
        sender=Sender(settings.email_from, settings.email_from_name),
        message_id_domain=settings.message_id_domain,
        message_key=message_key,
    )
    if len(email.as_bytes()) > settings.max_message_bytes:
        raise PermanentError(
            f"message is larger than MAX_MESSAGE_BYTES ({settings.max_message_bytes})"
        )
    return email, get_provider(request.provider)


def _job_id(kwargs: dict[str, Any]) -> uuid.UUID:
    if set(kwargs) != {"job_id"}:
        raise InvalidEmailRequest("job_id", "a stored job's message carries only its job_id")
    try:
        return uuid.UUID(str(kwargs["job_id"]))
    except ValueError:
        raise InvalidEmailRequest("job_id", "not a job id") from None


def _max_retries(kind: Kind) -> int:
    return kind.retries_allowed(get_settings().max_retries)


def _backoff(kind: Kind, retries: int) -> float:
    settings, policy = get_settings(), kind.retry
    return backoff_delay(
        retries,
        base=settings.retry_delay if policy.base_delay is None else policy.base_delay,
        cap=settings.retry_backoff_max if policy.max_delay is None else policy.max_delay,
        rng=random.random,
    )


def _reason(exc: BaseException) -> str:
    return redact_text(str(exc)) or type(exc).__name__


def _log_retry(task: EmailTask, exc: BaseException, countdown: float) -> None:
    log.warning(
        "email send failed, retrying",
        extra={
            "task_id": task.request.id,
            "kind": task.kind.name,
            "attempt": task.request.retries + 1,
            "retry_in_s": round(countdown, 2),
            "reason": _reason(exc),
        },
    )


def _register(kind: Kind) -> EmailTask:
    def send(self: EmailTask, **kwargs: Any) -> dict[str, Any]:
        return deliver(self, kwargs)

    send.__name__ = send.__qualname__ = f"send_{kind.name}"
    send.__doc__ = (
        f"Send {kind.description[:1].lower() + kind.description[1:]}" if kind.description else None
    )
    task: EmailTask = app.task(
        name=kind.task_name, bind=True, base=EmailTask, kind=kind, max_retries=None
    )(send)
    return task


_TASKS = {kind.name: _register(kind) for kind in all_kinds()}

send_email = _TASKS["email"]
send_email_verification = _TASKS["email_verification"]
send_password_reset = _TASKS["password_reset"]
send_welcome_email = _TASKS["welcome_email"]
send_booking_confirmation = _TASKS["booking_confirmation"]
send_booking_cancellation = _TASKS["booking_cancellation"]
send_payment_receipt = _TASKS["payment_receipt"]
send_payment_failed = _TASKS["payment_failed"]


def task_for(kind_name: str) -> EmailTask:
    """The task that sends ``kind_name``."""
    return _TASKS[kind_name]
