"""This package's Celery class, and how a signal receiver tells its app from a host's.

Every message for an email task passes :meth:`EmailWorkerCelery.send_task`, so the
payload is validated in the producer's process whichever way it was sent: ``apply_async``,
``delay``, a signature, or ``app.send_task`` by name.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery import Celery, current_app
from kombu.exceptions import OperationalError

from email_worker.kinds import kind_for_task
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
            # The job is committed: flagged, beat's dispatcher publishes it as soon as the
            # broker takes messages again (unflagged, the stranded-job relay, much later).
            from email_worker.producer.stored_jobs import mark_unpublished

            job_id = prepared.kwargs["job_id"]
            flagged = mark_unpublished([uuid.UUID(job_id)])
            log.warning(
                "broker unreachable; stored job will be relayed",
                extra={"job_id": job_id, "error": type(exc).__name__, "flagged": flagged},
            )
            return self.AsyncResult(job_id)


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
