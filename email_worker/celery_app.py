"""The Celery application: configuration, queues, routing and worker signals.

Settings live in the top-level ``celeryconfig`` module (or the module named by
``CELERY_CONFIG_MODULE``), which reads :mod:`email_worker.config`.  Every message
for an email task passes :meth:`EmailWorkerCelery.send_task`, so the payload is
validated in the producer's process whichever way it was sent: ``apply_async``,
``delay``, a signature, or ``app.send_task`` by name.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, signals

from email_worker.config import get_settings
from email_worker.kinds import kind_for_task, queue_priority


class EmailWorkerCelery(Celery):
    """A Celery app whose email messages are checked and prepared before publishing."""

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        """Publish a task; email tasks are validated (and tracked or scheduled) first."""
        kind = kind_for_task(name)
        if kind is None or options.get("retries"):
            return super().send_task(name, args, kwargs, **options)
        from email_worker.producer import prepare_send  # same floor; imported when first used

        prepared = prepare_send(self, kind, args, kwargs or {}, options)
        if prepared.result is not None:
            return prepared.result
        return super().send_task(name, (), prepared.kwargs, **prepared.options)


def route_task(
    name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **_: Any
) -> dict[str, str] | None:
    """Route an email task to its priority queue: the request's priority, else its kind's."""
    kind = kind_for_task(name)
    if kind is None:
        return None
    priority = (kwargs or {}).get("priority", kind.priority)
    try:
        suffix = queue_priority(priority)
    except ValueError:
        suffix = queue_priority(kind.priority)  # the worker rejects the payload with a reason
    return {"queue": get_settings().queues[suffix]}


app = EmailWorkerCelery("email_worker")
app.config_from_object(os.environ.get("CELERY_CONFIG_MODULE", "celeryconfig"))


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _close_connections(**_: Any) -> None:
    from email_worker.providers import close_providers

    close_providers()


@signals.setup_logging.connect
def _setup_logging(loglevel: Any = None, **_: Any) -> None:
    from email_worker.observability.logging import configure_logging

    configure_logging(get_settings())
