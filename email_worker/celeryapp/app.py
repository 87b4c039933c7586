"""The Celery application: configuration, queues, routing and worker signals.

Settings live in :mod:`email_worker.celeryapp.settings`, loaded by
:func:`email_worker.celeryapp.startup.configure`, and read :mod:`email_worker.config`.
Every message for an email task passes :meth:`EmailWorkerCelery.send_task`, so the
payload is validated in the producer's process whichever way it was sent: ``apply_async``,
``delay``, a signature, or ``app.send_task`` by name.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, current_app, signals
from kombu.exceptions import OperationalError

from email_worker.celeryapp.startup import configure
from email_worker.config import get_settings
from email_worker.kinds import kind_for_task, queue_priority
from email_worker.observability.flower import FLOWER_OPTION
from email_worker.privacy import redacted_request

log = logging.getLogger(__name__)


class EmailWorkerCelery(Celery):
    """A Celery app whose email messages are checked and prepared before publishing."""

    def task(self, *args: Any, **opts: Any) -> Any:
        """Make a task of this app alone: by default Celery adds it to every app of the process."""
        opts.setdefault("shared", False)
        return super().task(*args, **opts)

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        """Publish a task; email tasks are validated (and tracked or scheduled) first."""
        kind = kind_for_task(name)
        if kind is None or "job_id" in (kwargs or {}):
            # Not an email, or the message of a stored job (it carries nothing personal).
            return super().send_task(name, args, kwargs, **options)
        if options.get("retries") and self.current_worker_task is not None:
            # A worker retrying a payload it has checked; Celery's retry drops kwargsrepr.
            if options.get("kwargsrepr") is None:
                options["kwargsrepr"] = repr(redacted_request(kwargs or {}))
            return super().send_task(name, args, kwargs, **options)
        from email_worker.producer.publishing import (
            prepare_send,  # same floor; imported when first used
        )

        prepared = prepare_send(self, kind, args, kwargs or {}, options)
        if prepared.result is not None:
            return prepared.result
        try:
            return super().send_task(name, (), prepared.kwargs, **prepared.options)
        except (OperationalError, OSError) as exc:
            if not prepared.durable:
                raise
            # The job is committed: beat's relay publishes it once the broker is back.
            log.warning(
                "broker unreachable; stored job will be relayed",
                extra={"job_id": prepared.kwargs["job_id"], "error": type(exc).__name__},
            )
            return self.AsyncResult(prepared.kwargs["job_id"])


def route_task(
    name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **_: Any
) -> dict[str, str] | None:
    """Route an email task to its priority queue: the request's priority, else its kind's.

    Beat's tasks go to their own queue, so a backlog of emails cannot delay them.
    """
    if options and options.get("queue"):
        return None  # the producer chose it (Celery would let it win over a route anyway)
    kind = kind_for_task(name)
    if kind is None:
        if name.startswith("email_worker."):
            return {"queue": get_settings().periodic_queue}
        return None
    priority = (kwargs or {}).get("priority", kind.priority)
    try:
        suffix = queue_priority(priority)
    except ValueError:
        suffix = queue_priority(kind.priority)  # the worker rejects the payload with a reason
    return {"queue": get_settings().queues[suffix]}


# Not the process's current app: in a host service, Celery's `current_app` and the host's
# shared tasks stay the host's.
app = EmailWorkerCelery("email_worker", set_as_current=False)
configure(app)
app.user_options["preload"].add(FLOWER_OPTION)


def is_this_app(candidate: Any) -> bool:
    """Whether ``candidate`` is this package's app (a pool process started by spawn has a copy).

    Celery sends its worker signals for whichever app a worker or beat runs, and a host
    service runs its own with this package imported: receivers act only for this app.
    """
    return isinstance(candidate, EmailWorkerCelery)


def in_this_apps_pool() -> bool:
    """Whether this pool process works for this app: Celery makes the worker's app current.

    The signals of pool processes name the worker's host, not its app.
    """
    return is_this_app(current_app)


@signals.worker_process_init.connect
def _forget_inherited_connections(**_: Any) -> None:
    if not in_this_apps_pool():
        return
    from email_worker.db import sent_recorder
    from email_worker.db.engines import dispose_engines

    dispose_engines(close=False)  # the parent's pooled connections are not this child's
    sent_recorder.enable()  # records of sent emails are written while the next one goes out


@signals.worker_process_shutdown.connect
def _close_pool_process_connections(**_: Any) -> None:
    if in_this_apps_pool():
        _close_connections()


@signals.worker_shutdown.connect
def _close_worker_connections(sender: Any = None, **_: Any) -> None:
    if is_this_app(getattr(sender, "app", None)):
        _close_connections()


def _close_connections() -> None:
    from email_worker.db import sent_recorder
    from email_worker.db.engines import dispose_engines
    from email_worker.providers import close_providers

    sent_recorder.flush()
    close_providers()
    dispose_engines()


import email_worker.celeryapp.worker_signals  # noqa: E402, F401  counts and serves
