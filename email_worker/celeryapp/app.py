"""The Celery application: configuration, queues, routing and worker signals.

Settings live in :mod:`email_worker.celeryapp.settings`, loaded by
:func:`email_worker.celeryapp.startup.configure`, and read :mod:`email_worker.config`.
The app's class, which validates every email message before publishing it, is in
:mod:`email_worker.celeryapp.email_celery`.
"""

from __future__ import annotations

import sys
from typing import Any

from celery import signals

from email_worker.celeryapp.email_celery import EmailWorkerCelery, in_this_apps_pool, is_this_app
from email_worker.celeryapp.startup import configure
from email_worker.celeryapp.worker_timers import DropCancelledTimers
from email_worker.config import get_settings
from email_worker.kinds import kind_for_task, queue_priority
from email_worker.observability.flower import FLOWER_OPTION


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
app.steps["worker"].add(DropCancelledTimers)


@signals.worker_process_init.connect
def _forget_inherited_connections(**_: Any) -> None:
    if not in_this_apps_pool():
        return
    from email_worker.db import sent_recorder  # light: the database layer comes with a send

    if "email_worker.db.engines" in sys.modules:  # the parent made engines (a /health probe)
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
    # Only what this process loaded has connections to close: a pool process that sent
    # nothing, or a main process never asked for /health, imports nothing here.
    if "email_worker.db.sent_recorder" in sys.modules:
        from email_worker.db import sent_recorder

        sent_recorder.flush()
    if "email_worker.providers" in sys.modules:
        from email_worker.providers import close_providers

        close_providers()
    if "email_worker.db.engines" in sys.modules:
        from email_worker.db.engines import dispose_engines

        dispose_engines()
    elif "email_worker.db.direct" in sys.modules:
        from email_worker.db import direct

        direct.dispose()


import email_worker.celeryapp.worker_signals  # noqa: E402, F401  counts and serves
