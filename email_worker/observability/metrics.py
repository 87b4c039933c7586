"""The Prometheus metrics of email-worker, counted in whichever process does the work.

A prefork worker counts in its pool processes, so its metrics live in
prometheus-client's multiprocess mode: every process writes its own files in one
directory, and the worker's main process adds them up when ``/metrics`` is scraped.
The directory is ``PROMETHEUS_MULTIPROC_DIR`` when set (one directory per worker node:
it is wiped when the worker starts), else a private one made at start and removed at
shutdown.  Any other process (a producer, beat, a solo or threads worker) counts in
prometheus-client's default registry.

The metrics are built on first use, after the worker has chosen the directory, and
counting never raises: a metric is never the reason an email is not sent. A worker
creates the series of its known kinds, queues and providers at zero when it starts
(:func:`start_known_series`), so its first scrape already has every family.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec

if TYPE_CHECKING:
    from email_worker.config import Settings

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# The labels the series made at a worker's start take; others appear once counted.
STARTING_OUTCOMES = ("sent", "failed")
PROVIDER_OUTCOMES = ("ok", "transient", "permanent", "account", "rate_limited")
RETRY_REASONS = ("transient", "rate_limited", "partial")

P = ParamSpec("P")


@dataclass(frozen=True)
class Metrics:
    """The metrics this package counts."""

    jobs_processed: Any
    jobs_queued: Any
    jobs_tracked: Any
    processing_duration: Any
    provider_requests: Any
    provider_errors: Any
    job_retries: Any
    replica_fallbacks: Any
    jobs_stranded: Any
    jobs_reaped: Any
    oldest_due_age: Any


@functools.cache
def metrics() -> Metrics:
    """This process's metrics, built on first use."""
    from prometheus_client import Counter, Gauge, Histogram, values

    # The library picks its storage when first imported, which may be before the worker
    # chose its multiprocess directory: pick again now that the environment is final.
    values.ValueClass = values.get_value_class()
    return Metrics(
        jobs_processed=Counter(
            "email_jobs_processed",
            "Emails a worker finished: sent, failed, skipped (duplicate) or held (outbox).",
            ["kind", "queue", "provider", "outcome"],
        ),
        jobs_queued=Counter(
            "email_jobs_queued", "Emails a producer handed to the broker.", ["kind", "queue"]
        ),
        jobs_tracked=Counter(
            "email_jobs_tracked", "Tracked emails a producer stored as jobs.", ["kind"]
        ),
        processing_duration=Histogram(
            "email_job_processing_duration_seconds",
            "Time a worker spent on one attempt at an email.",
            ["kind", "outcome"],
            buckets=DURATION_BUCKETS,
        ),
        provider_requests=Counter(
            "email_provider_requests",
            "Sends asked of a provider, by outcome.",
            ["provider", "outcome"],
        ),
        provider_errors=Counter(
            "email_provider_errors",
            "Errors a provider returned, by error class.",
            ["provider", "kind_of_error"],
        ),
        job_retries=Counter("email_job_retries", "Email attempts retried.", ["kind", "reason"]),
        replica_fallbacks=Counter(
            "email_replica_fallbacks", "Reads served by the primary because the replica was down."
        ),
        jobs_stranded=Counter("email_jobs_stranded", "Stranded jobs beat's relay published again."),
        jobs_reaped=Counter("email_jobs_reaped", "Jobs whose send lease expired, reaped."),
        oldest_due_age=Gauge(
            "email_jobs_oldest_due_age_seconds",
            "Age of the oldest due job not sent yet.",
            multiprocess_mode="mostrecent",
        ),
    )


def never_raises(count: Callable[P, None]) -> Callable[P, None]:
    """Wrap a counting function so that a failure is logged, never raised."""

    @functools.wraps(count)
    def safe(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            count(*args, **kwargs)
        except Exception as exc:
            log.debug("metric not counted", extra={"error": type(exc).__name__})

    return safe


@never_raises
def start_known_series(settings: Settings) -> None:
    """Create, at zero, each series of the known kinds, queues and providers.

    A family without series is absent from ``/metrics``: dashboards then show "no data"
    and an alert on an increase misses the first one. Made in a worker's main process,
    the series are in its first scrape; the pool processes' counts add to them.
    """
    from email_worker import errors
    from email_worker.kinds import all_kinds

    m = metrics()
    kinds = [kind.name for kind in all_kinds()]
    queues = list(settings.queues.values())
    providers = sorted(
        {*settings.provider_chain(None), *(name for _, name in settings.kind_providers)}
    )
    provider_errors = [
        error.__name__
        for error in (
            errors.TransientProviderError,
            errors.RateLimitedError,
            errors.PartialDeliveryError,
            errors.PermanentProviderError,
            errors.AccountProviderError,
        )
    ]
    for kind in kinds:
        m.jobs_tracked.labels(kind)
        for outcome in STARTING_OUTCOMES:
            m.processing_duration.labels(kind, outcome)
        for reason in RETRY_REASONS:
            m.job_retries.labels(kind, reason)
        for queue in queues:
            m.jobs_queued.labels(kind, queue)
    for labels in itertools.product(kinds, queues, providers, STARTING_OUTCOMES):
        m.jobs_processed.labels(*labels)
    for provider in providers:
        for outcome in PROVIDER_OUTCOMES:
            m.provider_requests.labels(provider, outcome)
        for error in provider_errors:
            m.provider_errors.labels(provider, error)
    # A "most recent" gauge shows only once set; beat's relay sets it within seconds.
    m.oldest_due_age.set(0)


@never_raises
def count_provider_request(provider: str, exc: BaseException | None = None) -> None:
    """Count one send asked of ``provider`` and, when it failed, the error."""
    m = metrics()
    m.provider_requests.labels(provider, provider_outcome(exc)).inc()
    if exc is not None:
        m.provider_errors.labels(provider, type(exc).__name__).inc()


def provider_outcome(exc: BaseException | None) -> str:
    """ok, transient, permanent, account or rate_limited."""
    from email_worker.errors import AccountError, PermanentError, RateLimitedError

    if exc is None:
        return "ok"
    if isinstance(exc, RateLimitedError):
        return "rate_limited"
    if isinstance(exc, AccountError):
        return "account"
    return "permanent" if isinstance(exc, PermanentError) else "transient"


@never_raises
def count_queued(kind: str, queue: str) -> None:
    """Count one email a producer hands to the broker."""
    metrics().jobs_queued.labels(kind, queue).inc()


@never_raises
def count_tracked(kind: str) -> None:
    """Count one tracked email a producer stored."""
    metrics().jobs_tracked.labels(kind).inc()


@never_raises
def count_replica_fallback() -> None:
    """Count one read served by the primary instead of the replica."""
    metrics().replica_fallbacks.inc()


@never_raises
def count_stranded(published: int) -> None:
    """Count stranded jobs published again."""
    metrics().jobs_stranded.inc(published)


@never_raises
def count_reaped(reaped: int) -> None:
    """Count jobs reaped after their lease expired."""
    metrics().jobs_reaped.inc(reaped)


@never_raises
def set_oldest_due_age(session: Any) -> None:
    """Set the age of the oldest due job that is not sent yet (0 when there is none)."""
    from email_worker.db.job_queries import oldest_due_age

    metrics().oldest_due_age.set(oldest_due_age(session))


def prepare_multiprocess_directory() -> tuple[Path, bool]:
    """Choose and wipe the directory of a prefork worker's metrics; True if made here."""
    configured = os.environ.get(MULTIPROC_ENV)
    if configured:
        directory = Path(configured)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink(missing_ok=True)
        return directory, False
    directory = Path(tempfile.mkdtemp(prefix="email-worker-metrics-"))
    os.environ[MULTIPROC_ENV] = str(directory)
    return directory, True


def remove_directory(directory: Path) -> None:
    """Remove a private metrics directory at shutdown."""
    shutil.rmtree(directory, ignore_errors=True)


def mark_process_dead(pid: int) -> None:
    """Drop what a finished pool process kept only while alive (live gauges)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
