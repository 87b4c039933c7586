"""The email tasks: ``send_email`` and one ``send_<kind>`` per registered kind.

Each task declares its kind's retry policy with Celery's own options
(``autoretry_for``, ``retry_backoff``, ``retry_backoff_max``, ``retry_jitter``,
``max_retries``), so ``celery inspect registered`` and Flower show it. The work is in
:mod:`email_worker.worker.delivery`; :class:`EmailTask` adds what every kind shares: the
outcome log lines, and a :meth:`~EmailTask.retry` that keeps long waits in the
database and never drops a message whose retry could not be published.

A producer imports this module to call the tasks, so it loads only what a call needs
before its first call: the task bodies (the worker's modules, the database layer, the
providers) are imported when a task first runs: in a worker, by each pool process with
its first message, never by the main process (``imports`` in
:mod:`email_worker.celeryapp.settings`).
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from typing import Any

from celery import Task
from celery.exceptions import Reject, Retry

from email_worker.celeryapp.app import app
from email_worker.config import get_settings
from email_worker.errors import (
    AccountError,
    EmailWorkerError,
    InvalidEmailRequest,
    RateLimitedError,
    Throttled,
)
from email_worker.kinds import Kind, all_kinds, backoff_delay
from email_worker.privacy import masked_recipients
from email_worker.producer import bulk_requests
from email_worker.worker.retries import TRANSIENT

log = logging.getLogger("email_worker.tasks")


class EmailTask(Task):  # type: ignore[misc]
    """Base of every email task: the same retry handling and outcome logging for all kinds."""

    kind: Kind
    typing = False  # the payload is checked by validation, which names the bad field
    # A send that can never succeed, or whose retries are spent, is an expected outcome:
    # on_failure says "email failed" with the reason, and Celery's tracer logs it without a
    # traceback (a line our log set-up leaves out). Anything else is a bug and keeps its
    # traceback.
    throws = (EmailWorkerError,)
    Request = "email_worker.worker.task_request:EmailTaskRequest"
    Strategy = "email_worker.worker.task_request:email_strategy"

    @classmethod
    def on_bound(cls, app: Any) -> None:
        """Declare the kind's retry policy, with the settings' defaults, as Celery makes the task.

        Celery makes a task on its first use (a call, or the worker loading the app), and
        reads ``retry_backoff``, ``retry_backoff_max`` and ``max_retries`` right after this
        hook: the settings are read then, not when a producer imports this module.
        """
        super().on_bound(app)
        settings, policy = get_settings(), cls.kind.retry
        cls.retry_backoff = settings.retry_delay if policy.base_delay is None else policy.base_delay
        cls.retry_backoff_max = (
            settings.retry_backoff_max if policy.max_delay is None else policy.max_delay
        )
        cls.max_retries = cls.kind.retries_allowed(settings.max_retries)

    def backoff(self, retries: int) -> float:
        """Seconds before the next attempt: the declared policy, with equal jitter."""
        return backoff_delay(
            retries, base=self.retry_backoff, cap=self.retry_backoff_max, rng=random.random
        )

    def retry(  # type: ignore[override]
        self,
        args: Any = None,
        kwargs: dict[str, Any] | None = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: Any = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Retry:
        """Publish the next attempt, or keep it in the database, or give up after the last.

        A fast-path retry (no ``job_id``) is counted by the message: after ``max_retries``
        the error is raised. Its countdown comes from :meth:`backoff` (sub-second bases
        included), a partial delivery narrows it to the recipients still to reach, and a
        wait longer than ``SCHEDULE_THRESHOLD`` is stored as a scheduled job under the
        task id (the broker would redeliver so long a wait). A retry that cannot be
        published is stored too; failing that, the message goes back to the queue.
        """
        request = self.request
        if request.called_directly or request.is_eager:
            return super().retry(args, kwargs, exc, throw, eta, countdown, max_retries, **options)
        from email_worker.worker.delivery import log_retry, narrowed  # loaded by a worker

        payload = dict(request.kwargs if kwargs is None else kwargs)
        stored = "job_id" in payload
        # A wait for our own rate limit is no failed attempt: it is not counted.
        retries = request.retries + (0 if isinstance(exc, Throttled) else 1)
        if not stored:
            limit = self.max_retries if max_retries is None else max_retries
            if retries > limit:
                if exc is not None:
                    raise exc
                self._rejecting()
                raise Reject("no retries left", requeue=False)
            countdown = self.backoff(request.retries)
            if isinstance(exc, RateLimitedError):
                countdown = exc.retry_after
            payload = narrowed(payload, exc) or payload
            log_retry(self, exc or EmailWorkerError("retry"), countdown)
            if countdown > get_settings().schedule_threshold:
                self._store_retry(payload, countdown)
                raise Retry(exc=exc, when=countdown)
        signature = self.signature_from_request(
            request, None, payload, countdown=countdown, retries=retries, **options
        )
        try:
            signature.apply_async()
        except Exception as publish_error:
            log.warning(
                "retry could not be published",
                extra={"task_id": request.id, "error": type(publish_error).__name__},
            )
            if not stored:
                self._store_retry(payload, countdown or 0.0)
            # A stored job's row says when it is due; beat's relay publishes it.
        raise Retry(exc=exc, when=countdown, sig=signature)

    def _store_retry(self, payload: dict[str, Any], countdown: float) -> None:
        """Keep a fast-path retry as a scheduled job whose id is the task id."""
        from email_worker.producer.publishing import check_request
        from email_worker.producer.stored_jobs import job_id_for, store_job
        from email_worker.worker.delivery import reason

        when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=countdown)
        try:
            job_id, created = store_job(
                self.kind,
                check_request(self.kind, (), payload),
                scheduled_at=when,
                scheduled=True,
                job_id=job_id_for(self.request.id),
                attempts_made=self.request.retries + 1,
            )
        except EmailWorkerError as exc:
            log.error(
                "retry can be neither published nor stored; the message goes back to the queue",
                extra={"task_id": self.request.id, "error": reason(exc)},
            )
            self._rejecting()
            raise Reject(exc, requeue=True) from None
        log.info(
            "retry kept in the database until due",
            extra={"task_id": self.request.id, "job_id": str(job_id), "new": created},
        )

    def _rejecting(self) -> None:
        """The attempt's duration, as the task rejects its message (no hook follows)."""
        from email_worker.observability import attempts

        attempts.observe_duration(self, "rejected")

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        """Note when the attempt started, for the duration in the outcome log."""
        self.request.started_at = time.monotonic()

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        """Count the attempt; log the delivery (or that every recipient was held) with a
        masked recipient."""
        from email_worker.observability import attempts  # with a pool process's first send

        outcome = attempts.success_outcome(retval)
        attempts.count_success(self, retval, outcome)
        if outcome == "skipped" or not log.isEnabledFor(logging.INFO):
            return  # a skip is logged as "email skipped" where the reason was known
        fields = {**self.outcome_fields(), **retval}
        log.info("email held" if outcome == "held" else "email sent", extra=fields)

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        """Log the final failure and its reason."""
        from email_worker.worker.delivery import reason

        level = logging.CRITICAL if isinstance(exc, AccountError) else logging.ERROR
        log.log(
            level,
            "email failed",
            extra={
                **self.outcome_fields(),
                "provider": getattr(exc, "provider", None) or None,
                "error_type": type(exc).__name__,
                "reason": reason(exc),
            },
        )

    def outcome_fields(self) -> dict[str, Any]:
        """What identifies this attempt in a log line: ids, kind, queue, timing, masked ``to``.

        Never the template data, subject or body; ``provider`` is filled in by the caller
        once it is known.
        """
        request = self.request
        payload = request.kwargs if isinstance(request.kwargs, dict) else {}
        started = getattr(request, "started_at", None)
        fields: dict[str, Any] = {"task_id": request.id}
        if "job_id" in payload:
            fields["job_id"] = str(payload["job_id"])
        fields.update(
            kind=self.kind.name,
            queue=(request.delivery_info or {}).get("routing_key"),
            provider=None,
            duration_ms=round((time.monotonic() - started) * 1000, 1) if started else None,
            retries=request.retries,
            tracked="job_id" in payload or bool(payload.get("tracked")),
            to=masked_recipients(payload.get("only_recipients") or payload.get("to")),
        )
        return fields


def _register(kind: Kind) -> EmailTask:
    def send(self: EmailTask, **kwargs: Any) -> dict[str, Any]:
        from email_worker.worker.task_body import deliver  # with a pool process's first send

        return deliver(self, kwargs)

    send.__name__ = send.__qualname__ = f"send_{kind.name}"
    send.__doc__ = (
        f"Send {kind.description[:1].lower() + kind.description[1:]}" if kind.description else None
    )
    # The backoff and the retry count come from the settings: EmailTask.on_bound reads them.
    task: EmailTask = app.task(
        name=kind.task_name,
        bind=True,
        base=EmailTask,
        kind=kind,
        autoretry_for=TRANSIENT,
        retry_jitter=True,
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
send_newsletter = _TASKS["newsletter"]


def task_for(kind_name: str) -> EmailTask:
    """The task that sends ``kind_name``."""
    return _TASKS[kind_name]


class BulkTask(Task):  # type: ignore[misc]
    """Base of the bulk tasks: the email tasks' message guard and backoff."""

    typing = False
    Request = "email_worker.worker.task_request:EmailTaskRequest"
    Strategy = "email_worker.worker.task_request:email_strategy"

    def backoff(self, retries: int) -> float:
        """Seconds before the next attempt: RETRY_DELAY doubled per attempt, capped, jittered."""
        settings = get_settings()
        return backoff_delay(
            retries, base=settings.retry_delay, cap=settings.retry_backoff_max, rng=random.random
        )


class BulkSendTask(BulkTask):
    """``send_bulk``: checked in the producer's process before anything is enqueued."""

    def apply_async(
        self, args: Any = None, kwargs: dict[str, Any] | None = None, **options: Any
    ) -> Any:
        """Validate the bulk send, then publish it on its priority's queue."""
        if args:
            raise InvalidEmailRequest("args", "send_bulk takes keyword arguments only")
        request = bulk_requests.check_bulk(kwargs or {})
        options.setdefault("queue", get_settings().queues[request.shared.priority])
        options.setdefault(
            "kwargsrepr",
            repr(
                {"template_id": request.shared.template_id, "recipients": len(request.recipients)}
            ),
        )
        # The worker's limits govern the task, not the producer's.
        options.update(time_limit=None, soft_time_limit=None)
        return super().apply_async((), request.to_kwargs(), **options)


@app.task(name=bulk_requests.BULK_TASK, bind=True, base=BulkSendTask, max_retries=None)
def send_bulk(self: BulkSendTask, **kwargs: Any) -> dict[str, Any]:
    """Store a bulk send (one template, many recipients) and publish its batches."""
    from email_worker.worker import bulk  # with a pool process's first bulk send

    return bulk.store_bulk(self.app, self.request.id, kwargs)


@app.task(name=bulk_requests.BATCH_TASK, bind=True, base=BulkTask, max_retries=None)
def send_bulk_batch(
    self: BulkTask,
    bulk_id: str,
    first: int,
    last: int,
    priority: str = bulk_requests.DEFAULT_PRIORITY,
) -> dict[str, Any]:
    """Send one batch of a bulk send's recipients and record each outcome."""
    from email_worker.worker import bulk

    return bulk.send_batch(self, bulk_id, first, last, priority)
