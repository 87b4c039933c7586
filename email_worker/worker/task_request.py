"""The request class of every email task: what a worker does with a message around a send.

Everything here runs in the worker's main process, which must survive any message:

- the task arguments shown in logs, events and Flower are a redacted summary, whatever
  the producer put in the message's ``argsrepr``/``kwargsrepr`` headers;
- the time limits are the worker's own (``PROCESS_TIMEOUT``), not the producer's;
- a message with values too deep or too big is failed before it reaches the pool
  (handing it over would exhaust the main process's stack);
- a message that has already killed :data:`MAX_WORKER_LOSSES` worker processes is set
  aside in the dead-letter queue instead of being run again.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from celery.exceptions import InvalidTaskError
from celery.worker import strategy
from celery.worker.request import Request
from celery.worker.state import task_ready
from kombu.utils.encoding import safe_repr

from email_worker.errors import InvalidEmailRequest
from email_worker.privacy import redacted_request
from email_worker.producer.bulk_requests import BULK_TASK
from email_worker.producer.validation import check_value_shape
from email_worker.worker.poison_messages import (
    MAX_WORKER_LOSSES,
    loss_counter,
    publish_dead_letter,
)

log = logging.getLogger("email_worker.tasks")


class EmailTaskRequest(Request):  # type: ignore[misc]
    """A Celery request for an email task."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().__init__(*args, **kwargs)
        except (KeyError, TypeError, ValueError) as exc:
            # A body that is not (args, kwargs, embed), or headers without an id: the
            # consumer rejects an InvalidTaskError, while these would stop the worker.
            raise InvalidTaskError(f"malformed task message: {type(exc).__name__}") from None
        self._verdict: bool | None = None
        self._counted = False
        # Only a message that came back can have killed a worker process: a first delivery
        # costs the broker nothing more than its own acknowledgement.
        self._redelivered = bool(
            self.message.headers.get("redelivered") or (self.delivery_info or {}).get("redelivered")
        )
        # The worker's (hard, soft) limits govern a send: a message's ``timelimit`` is the
        # producer's. Celery reads this attribute when it hands the request to the pool.
        conf = self.app.conf
        self.time_limits = (conf.task_time_limit, conf.task_soft_time_limit)
        argsrepr = f"<{len(self.args)} positional>" if self.args else "()"
        if isinstance(self.kwargs, Mapping):
            kwargsrepr = repr(redacted_request(self.kwargs))
        else:
            kwargsrepr = f"<{type(self.kwargs).__name__}>"
        # Celery's ``argsrepr``/``kwargsrepr`` properties are read-only, and its events,
        # ``info()`` and ``repr()`` read the slots behind them, so the slots are where the
        # summary must go; the pool process logs a failure with the request dict's values.
        self._argsrepr, self._kwargsrepr = argsrepr, kwargsrepr
        self.request_dict["argsrepr"] = argsrepr
        self.request_dict["kwargsrepr"] = kwargsrepr

    def revoked(self) -> bool:
        """Whether this request must not run: revoked, refused, or set aside.

        Celery asks this in the main process right before handing a request to the
        pool, which is the last moment to keep a message from it.
        """
        if super().revoked():
            return True
        if self._verdict is None:
            self._verdict = self._refused() or (self._redelivered and self._set_aside())
        return self._verdict

    def info(self, safe: bool = False) -> dict[str, Any]:
        """What ``celery inspect`` and Flower show of the request: always the summary."""
        return dict(super().info(safe=True))

    def on_accepted(self, pid: int, time_accepted: float) -> None:
        """A pool process started the send: count it until the message is acknowledged."""
        super().on_accepted(pid, time_accepted)
        if self._redelivered and self.task.acks_late and not self.acknowledged:
            try:
                loss_counter(self.app).add(self.id)
                self._counted = True
            except Exception as exc:
                log.warning("could not count the start of a send", extra=self._fields(exc))

    def acknowledge(self) -> None:
        """Acknowledge the message; it is finished, so its count is forgotten."""
        super().acknowledge()
        self._forget()

    def reject(self, requeue: bool = False) -> None:
        """Reject the message; unless it comes back, its count is forgotten."""
        super().reject(requeue=requeue)
        if not requeue:
            self._forget()

    def _refused(self) -> bool:
        """Fail a message whose values are too deep or too big, without running it."""
        try:
            if not isinstance(self.kwargs, dict):
                raise InvalidEmailRequest("kwargs", "must be a mapping of keyword arguments")
            check_value_shape("args", self.args)
            for name, value in self.kwargs.items():
                if name == "recipients" and self.name == BULK_TASK:  # checked one by one
                    _check_recipients_shape(value)
                else:
                    check_value_shape(str(name)[:100], value)
            for name, value in self.message.headers.items():
                check_value_shape(f"message header {str(name)[:100]}", value)
        except InvalidEmailRequest as exc:
            log.error("email failed", extra={**self._fields(exc), "reason": str(exc)})
            try:
                # Celery has no public form of the request's context (its headers with the
                # body's callbacks and chord), which is what its own failure path stores.
                self.task.backend.mark_as_failure(
                    self.id, exc, request=self._context, store_result=self.store_errors
                )
            except Exception:
                log.warning("could not store the failure", extra={"task_id": self.id})
            self.send_event("task-failed", exception=safe_repr(exc))
            task_ready(self)
            self.acknowledge()
            return True
        return False

    def _set_aside(self) -> bool:
        """Move a message that keeps killing worker processes to the dead-letter queue."""
        counter = loss_counter(self.app)
        try:
            # The deliveries that came back were counted; the first one, which came back
            # too, was not.
            losses = counter.count(self.id) + 1
        except Exception as exc:
            log.warning("could not read the count of lost workers", extra=self._fields(exc))
            return False
        if losses < MAX_WORKER_LOSSES:
            return False
        reason = f"worker processes died {losses} times while sending it"
        try:
            queue = publish_dead_letter(self.app, self.message)
        except Exception as exc:
            log.error("could not set the email aside; it stays queued", extra=self._fields(exc))
            task_ready(self)
            self.reject(requeue=True)
            return True
        self._fail_job(reason)
        log.error(
            "email set aside",
            extra={**self._fields(), "reason": reason, "dead_letter_queue": queue},
        )
        self.send_event("task-failed", exception=f"set aside: {reason}")
        task_ready(self)
        self._counted = True  # forget the count along with the message
        self.acknowledge()
        return True

    def _fail_job(self, reason: str) -> None:
        """Fail the row of a tracked job, so it does not stay ``sending`` or ``pending``."""
        if not isinstance(self.kwargs, dict) or set(self.kwargs) != {"job_id"}:
            return
        from email_worker.db import transitions
        from email_worker.db.session import primary_session

        try:
            job_id = uuid.UUID(str(self.kwargs["job_id"]))
            with primary_session() as session:
                transitions.mark_failed(session, job_id, error=reason)
        except Exception as exc:
            log.error("could not fail the job set aside", extra=self._fields(exc))

    def _forget(self) -> None:
        if self._counted:
            self._counted = False
            try:
                loss_counter(self.app).clear(self.id)
            except Exception as exc:
                log.warning("could not clear the count of lost workers", extra=self._fields(exc))

    def _fields(self, exc: BaseException | None = None) -> dict[str, Any]:
        kind = getattr(self.task, "kind", None)
        fields = {"task_id": self.id, "kind": kind.name if kind else self.name}
        if exc is not None:
            fields["error_type"] = type(exc).__name__
        return fields


def _check_recipients_shape(recipients: Any) -> None:
    """A bulk send's recipients: within MAX_BULK_RECIPIENTS, each within the value limits."""
    from email_worker.config import get_settings

    if not isinstance(recipients, list):
        raise InvalidEmailRequest("recipients", "expected a list of recipients")
    limit = get_settings().max_bulk_recipients
    if len(recipients) > limit:
        raise InvalidEmailRequest("recipients", f"more than {limit} recipients")
    for index, recipient in enumerate(recipients):
        check_value_shape(f"recipients[{index}]", recipient)


def email_strategy(task: Any, app: Any, consumer: Any, **options: Any) -> Any:
    """Celery's default strategy, refusing a body it would choke on instead of stopping.

    Celery looks for ``"args"`` in a protocol-2 body before building the request; a
    body such as ``42`` or ``null`` raises there, outside any handler, and stops the
    worker. Refused as an invalid task message, it is logged and dropped.
    """
    handle = strategy.default(task, app, consumer, **options)

    def task_message_handler(message: Any, body: Any, *args: Any, **kwargs: Any) -> Any:
        if body is None and not isinstance(message.payload, dict | list | str):
            raise InvalidTaskError(f"malformed task message: a {type(message.payload).__name__}")
        return handle(message, body, *args, **kwargs)

    return task_message_handler
