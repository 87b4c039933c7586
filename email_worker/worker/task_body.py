"""The body of every email task: the payload's fast path, or a stored job's path.

A pool process imports this module with its first send. The fast path
(:mod:`email_worker.worker.delivery`) comes with it; the tracked path
(:mod:`email_worker.worker.tracked_delivery`, and SQLAlchemy with it) only with the
first message that carries a stored job or asks to be tracked.
"""

from __future__ import annotations

from typing import Any

from email_worker.config import get_settings
from email_worker.producer.publishing import check_request
from email_worker.worker.delivery import deliver_payload


def deliver(task: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Send one email: a stored job when the message carries ``job_id``, else the payload."""
    if "job_id" in kwargs:
        from email_worker.worker import tracked_delivery  # with the first stored job

        return tracked_delivery.deliver_job(task, kwargs)
    settings = get_settings()
    request = check_request(task.kind, (), kwargs, settings=settings)
    if request.tracked:
        # Published without this package's producer: stored first, then sent tracked.
        from email_worker.worker import tracked_delivery

        return tracked_delivery.deliver_unstored(task, request)
    return deliver_payload(task, request, settings)
