"""The email tasks: ``send_email`` and one ``send_<kind>`` per registered kind.

A task holds no logic of its own: :func:`deliver` validates, renders, builds and
sends, and is the one place where an error is mapped to retry or fail.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from celery import Task

from email_worker.celery_app import app
from email_worker.config import get_settings
from email_worker.errors import AccountError, PermanentError, TransientError
from email_worker.kinds import Kind, all_kinds, backoff_delay
from email_worker.messages import Sender, build_message
from email_worker.privacy import redact_text
from email_worker.producer import check_request
from email_worker.providers import get_provider
from email_worker.rendering import get_renderer, render_inline

log = logging.getLogger("email_worker.tasks")


class EmailTask(Task):  # type: ignore[misc]
    """Base of every email task: the same timing and outcome logging for all kinds."""

    kind: Kind
    typing = False  # the payload is checked by validation, which names the bad field

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        """Note when the attempt started, for the duration in the outcome log."""
        self.request.started_at = time.monotonic()

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        """Log the delivery with what identifies it, never the recipient."""
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
    """Validate, render, build and send one email; retry transient failures with backoff."""
    settings = get_settings()
    request = check_request(task.kind, (), kwargs)
    if request.template_id:
        content = get_renderer().render(request.template_id, request.data)
    else:
        content = render_inline(request.subject or "", request.html, request.text)
    email = build_message(
        request,
        content,
        sender=Sender(settings.email_from, settings.email_from_name),
        message_id_domain=settings.message_id_domain,
        message_key=task.request.id,
    )
    if len(email.as_bytes()) > settings.max_message_bytes:
        raise PermanentError(
            f"message is larger than MAX_MESSAGE_BYTES ({settings.max_message_bytes})"
        )
    provider = get_provider(request.provider)
    try:
        message_id = provider.send(email)
    except TransientError as exc:
        policy = task.kind.retry
        max_retries = settings.max_retries if policy.max_retries is None else policy.max_retries
        if task.request.retries >= max_retries:
            raise
        countdown = backoff_delay(
            task.request.retries,
            base=settings.retry_delay if policy.base_delay is None else policy.base_delay,
            cap=settings.retry_backoff_max if policy.max_delay is None else policy.max_delay,
            rng=random.random,
        )
        log.warning(
            "email send failed, retrying",
            extra={
                "task_id": task.request.id,
                "kind": task.kind.name,
                "attempt": task.request.retries + 1,
                "retry_in_s": round(countdown, 2),
                "reason": redact_text(str(exc)),
            },
        )
        raise task.retry(exc=exc, countdown=countdown, max_retries=max_retries) from None
    return {"provider": provider.name, "message_id": message_id}


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
