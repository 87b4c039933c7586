"""What one attempt at an email ended in, counted in the process that made it.

An email task counts its own attempts from its hooks (``on_success``, and before it
rejects its message): Celery calls a task's hooks directly, while each of its
``task_prerun``/``task_postrun``/``task_success`` signals with a receiver costs every task
of the process a dispatch. Failures and retries, which Celery also reports from the
worker's main process (a hard time limit, a rejected message), are counted by the signal
receivers of :mod:`email_worker.celeryapp.worker_signals`, with the functions here.

Counting never raises: a metric is never the reason an email is not sent.
"""

from __future__ import annotations

import time
from typing import Any

from email_worker.config import get_settings
from email_worker.observability import metrics


def success_outcome(result: Any) -> str:
    """sent, skipped (a duplicate or a finished job) or held (kept in the outbox)."""
    if not isinstance(result, dict):
        return "sent"
    if result.get("skipped"):
        return "skipped"
    if result.get("provider") == "outbox" and get_settings().delivery_mode != "live":
        return "held"
    return "sent"


def retry_reason(exc: BaseException | None) -> str:
    """transient, rate_limited or partial."""
    from email_worker.errors import PartialDeliveryError, RateLimitedError

    if isinstance(exc, PartialDeliveryError):
        return "partial"
    return "rate_limited" if isinstance(exc, RateLimitedError) else "transient"


def queue_of(task: Any) -> str:
    """The queue the task's current message came from ('' when unknown)."""
    delivery = getattr(task.request, "delivery_info", None) or {}
    return str(delivery.get("routing_key") or "")


@metrics.never_raises
def observe_duration(task: Any, outcome: str) -> None:
    """The attempt's duration, from when the task noted its start (``before_start``)."""
    started = getattr(task.request, "started_at", None)
    if started is not None:
        elapsed = time.monotonic() - started
        metrics.metrics().processing_duration.labels(task.kind.name, outcome).observe(elapsed)


@metrics.never_raises
def count_success(task: Any, result: Any, outcome: str) -> None:
    """An attempt that returned: sent, skipped or held, with its duration."""
    provider = str(result.get("provider") or "") if isinstance(result, dict) else ""
    kind = task.kind.name
    metrics.metrics().jobs_processed.labels(kind, queue_of(task), provider, outcome).inc()
    observe_duration(task, outcome)


@metrics.never_raises
def count_failure(task: Any, exception: BaseException | None) -> None:
    """An attempt that failed for good, in a pool process or the worker's main process."""
    provider = str(getattr(exception, "provider", "") or "")
    kind = task.kind.name
    metrics.metrics().jobs_processed.labels(kind, queue_of(task), provider, "failed").inc()
    observe_duration(task, "failed")


@metrics.never_raises
def count_retry(task: Any, exception: BaseException | None) -> None:
    """An attempt that will be tried again."""
    metrics.metrics().job_retries.labels(task.kind.name, retry_reason(exception)).inc()
    observe_duration(task, "retried")
