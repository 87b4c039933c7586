"""The periodic tasks ``celery -A email_worker beat`` runs.

Each works on the primary in short transactions and publishes only after its
commit, so a failed publish leaves a row that the next relay picks up again.

They send no task events (``send_events=False``): run every second or every few, they
would fill Flower's task list and push the emails out of it. Beat's ``/health`` and
``email_beat_last_run_timestamp_seconds`` show when each was last sent.

A worker's main process imports this module as it starts, to know these tasks by name;
the main process runs none of them, so the database layer is imported by each task as it
runs (in a pool process), not with this module: the main process stays without it.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid

from kombu.exceptions import OperationalError

from email_worker.celeryapp.app import app
from email_worker.config import get_settings
from email_worker.kinds import queue_priority
from email_worker.observability import metrics

log = logging.getLogger(__name__)

BATCH = 500
# A reaped job waits this long before it can be claimed again, so that a late record of
# `sent` from the worker that was thought lost lands first.
REAP_GRACE = 15.0


def _publish(job_ids: list[uuid.UUID], **options: float) -> int:
    """Publish the message of each stored job; returns how many were published."""
    from email_worker.db import job_queries
    from email_worker.db.session import primary_session
    from email_worker.producer.stored_jobs import mark_unpublished, publish_job

    if not job_ids:
        return 0
    with primary_session() as session:
        rows = [
            (job.id, job.job_type, job.priority) for job in job_queries.get_jobs(session, job_ids)
        ]
    for index, (job_id, job_type, priority) in enumerate(rows):
        try:
            publish_job(app, job_id, job_type, queue_priority(priority), **options)
        except (OperationalError, OSError):
            # The broker refuses (down, or full): the rest wait for the next dispatch.
            mark_unpublished([row[0] for row in rows[index:]])
            raise
    return len(rows)


@app.task(name="email_worker.dispatch_due_jobs", ignore_result=True, send_events=False)
def dispatch_due_jobs() -> int:
    """Hand scheduled jobs, and retries that waited in the database, to the workers when due."""
    from email_worker.db import housekeeping
    from email_worker.db.session import primary_session

    with primary_session() as session:
        due = housekeeping.dispatch_due_jobs(
            session, limit=BATCH, hold_seconds=get_settings().schedule_threshold
        )
    published = _publish(due)
    if published:
        log.info("scheduled jobs dispatched", extra={"count": published})
    return published


@app.task(name="email_worker.relay_stranded_jobs", ignore_result=True, send_events=False)
def relay_stranded_jobs() -> int:
    """Publish again jobs left pending or retrying well past their time (e.g. broker down)."""
    from email_worker.db import housekeeping, job_queries
    from email_worker.db.session import primary_session

    with primary_session() as session:
        stranded = housekeeping.stranded_jobs(
            session, older_than_seconds=get_settings().stranded_after, limit=BATCH
        )
    published = _publish(stranded)
    metrics.count_stranded(published)
    with primary_session() as session:
        metrics.set_oldest_due_age(lambda: job_queries.oldest_due_age(session))
    if published:
        log.warning("stranded jobs published again", extra={"count": published})
    return published


@app.task(name="email_worker.reap_expired_leases", ignore_result=True, send_events=False)
def reap_expired_leases() -> dict[str, int]:
    """Give a job whose worker was lost mid-send another attempt, or fail it when none are left."""
    from email_worker.db import housekeeping
    from email_worker.db.session import primary_session

    with primary_session() as session:
        requeued, failed = housekeeping.reap_expired_leases(session, grace_seconds=REAP_GRACE)
    _publish(requeued, countdown=REAP_GRACE)
    metrics.count_reaped(len(requeued) + len(failed))
    if requeued or failed:
        log.warning(
            "expired send leases reaped", extra={"requeued": len(requeued), "failed": len(failed)}
        )
    return {"requeued": len(requeued), "failed": len(failed)}


@app.task(name="email_worker.cleanup_old_jobs", ignore_result=True, send_events=False)
def cleanup_old_jobs() -> int:
    """Delete finished jobs older than JOB_RETENTION, in batches."""
    from email_worker.db import housekeeping
    from email_worker.db.session import primary_session

    cutoff = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(
        seconds=get_settings().job_retention
    )
    with primary_session() as session:
        deleted = housekeeping.delete_old_jobs(session, cutoff)
    if deleted:
        log.info("old jobs deleted", extra={"count": deleted})
    return deleted


@app.task(name="email_worker.clear_personal_data", ignore_result=True, send_events=False)
def clear_personal_data() -> dict[str, int]:
    """Clear personal fields of rows finished longer ago than PERSONAL_DATA_RETENTION, in batches.

    Logs how many rows of each table were cleared, every run, so the log shows that
    retention runs; never what was cleared.
    """
    from email_worker.db import retention
    from email_worker.db.session import primary_session

    cutoff = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(
        seconds=get_settings().personal_data_retention
    )
    with primary_session() as session:
        counts = retention.clear_personal_data(session, cutoff)
    log.info("personal data cleared", extra=counts)
    return counts
