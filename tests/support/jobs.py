"""Stored jobs made the way the producer stores them, for tests that start from a row."""

from __future__ import annotations

import time
import uuid
from typing import Any

from email_worker.db import job_queries, new_jobs
from email_worker.db.session import primary_session
from email_worker.kinds import get_kind
from email_worker.ops import operations


def wait_for_status(job_id: str, wanted: str, timeout: float = 30.0) -> operations.JobView:
    """Poll the job (as operators read it, from the replica) until it reaches ``wanted``.

    A job the replica has not replayed yet reads as not found: that is waited out too.
    """
    deadline = time.monotonic() + timeout
    seen = "not yet on the replica"
    while time.monotonic() < deadline:
        try:
            job = operations.get_job(job_id)
        except operations.JobNotFound:
            time.sleep(0.05)
            continue
        if job.status == wanted:
            return job
        seen = f"{job.status} ({job.last_error})"
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} is {seen}, not {wanted}")


def stored_verification_job(data: dict[str, Any] | None = None) -> uuid.UUID:
    """Commit a pending email-verification job on the primary (sample data); return its id."""
    payload = {
        "to": ["ann@example.com"],
        "template_id": "email_verification",
        "data": dict(get_kind("email_verification").sample_data) if data is None else data,
        "kind": "email_verification",
        "priority": "high",
        "tracked": True,
    }
    with primary_session() as session:
        job, _ = new_jobs.create_job(
            session,
            job_type="email_verification",
            recipient_email="ann@example.com",
            payload=payload,
        )
        return job.id


def stored(job_id: uuid.UUID | str) -> Any:
    """The job as the primary has it now."""
    with primary_session() as session:
        job = job_queries.get_job(session, uuid.UUID(str(job_id)))
        if job is not None:
            session.expunge(job)
        return job
