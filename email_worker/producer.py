"""The producer's side of a send: validate, write the tracked row, then publish.

Called from :meth:`EmailWorkerCelery.send_task` for every email task, so a bad
payload raises :class:`InvalidEmailRequest` in the producer's process and nothing
reaches the queue.  A tracked send, or any send delayed beyond
``SCHEDULE_THRESHOLD``, is first committed as an ``email_jobs`` row on the primary;
the message then carries only the job id.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from celery.result import AsyncResult
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

from email_worker.config import get_settings
from email_worker.db import jobs, status
from email_worker.db.models import EmailJob
from email_worker.db.session import primary_session
from email_worker.errors import InvalidEmailRequest, TransientError
from email_worker.kinds import Kind, get_kind, kind_for_task
from email_worker.privacy import redacted_request
from email_worker.rendering import get_renderer
from email_worker.validation import EmailRequest, validate_request

log = logging.getLogger(__name__)

SUBJECT_COLUMN = 500  # email_jobs.subject; the payload keeps the whole subject
# A job row keeps its priority as the first number of its band (0-2, 3-6, 7-9).
ROW_PRIORITY = {"high": 0, "default": 3, "low": 7}
# A publish that cannot reach the broker gives up fast: the committed row is relayed later.
TRACKED_PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2}


class DatabaseUnavailable(TransientError):
    """The primary database could not store a tracked or scheduled send; nothing was queued."""


@dataclass
class PreparedSend:
    """What to publish, or the result to hand back when nothing is published now."""

    kwargs: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)
    result: AsyncResult | None = None
    durable: bool = False  # a row holds the job: a failed publish is relayed, not lost


def check_request(kind: Kind, args: Any, kwargs: dict[str, Any]) -> EmailRequest:
    """Validate a send request for ``kind`` against the templates this process can see."""
    if args:
        raise InvalidEmailRequest("args", "email tasks take keyword arguments only")
    return validate_request(
        kind,
        kwargs,
        template_exists=get_renderer().exists,
        max_message_bytes=get_settings().max_message_bytes,
    )


def send_at(options: dict[str, Any], now: dt.datetime) -> dt.datetime:
    """When a send was asked for, from ``countdown`` or ``eta`` (now if neither)."""
    countdown, eta = options.get("countdown"), options.get("eta")
    if countdown is not None and eta is not None:
        raise InvalidEmailRequest("eta", "give countdown or eta, not both")
    if countdown is not None:
        try:
            return now + dt.timedelta(seconds=float(countdown))
        except (TypeError, ValueError):
            raise InvalidEmailRequest("countdown", "expected a number of seconds") from None
    if eta is None:
        return now
    if isinstance(eta, str):
        try:
            eta = dt.datetime.fromisoformat(eta)
        except ValueError:
            raise InvalidEmailRequest("eta", "expected an ISO 8601 date and time") from None
    if not isinstance(eta, dt.datetime):
        raise InvalidEmailRequest("eta", "expected a datetime")
    return eta if eta.tzinfo else eta.replace(tzinfo=dt.UTC)  # naive means UTC, as in Celery


def prepare_send(
    app: Any, kind: Kind, args: Any, kwargs: dict[str, Any], options: dict[str, Any]
) -> PreparedSend:
    """Validate a send and decide how it is published: directly, tracked, or scheduled."""
    request = check_request(kind, args, kwargs)
    settings = get_settings()
    now = dt.datetime.now(dt.UTC)
    when = send_at(options, now)
    scheduled = (when - now).total_seconds() > settings.schedule_threshold
    payload = request.to_payload()
    options = {k: v for k, v in options.items() if k not in ("countdown", "eta")}
    options.setdefault("queue", settings.queues[request.priority])
    options.setdefault("ignore_result", True)
    options.setdefault("kwargsrepr", repr(redacted_request(payload)))
    if not (request.tracked or scheduled):
        if when > now:
            options["eta"] = when
        return PreparedSend(kwargs=payload, options=options)

    job, created = store_job(
        kind, request, scheduled_at=when if when > now else None, scheduled=scheduled
    )
    result = AsyncResult(str(job.id), app=app)
    if scheduled or not created:
        # Beat dispatches it when due; an idempotency key seen before was published then.
        return PreparedSend(kwargs={}, result=result)
    options.update(
        task_id=str(job.id),
        kwargsrepr=repr({"job_id": str(job.id)}),
        retry_policy=TRACKED_PUBLISH_RETRY,
    )
    if when > now:
        options["eta"] = when
    return PreparedSend(kwargs={"job_id": str(job.id)}, options=options, durable=True)


def store_job(
    kind: Kind, request: EmailRequest, *, scheduled_at: dt.datetime | None, scheduled: bool
) -> tuple[EmailJob, bool]:
    """Commit the job row on the primary; returns it and whether it is new."""
    try:
        with primary_session() as session:
            job, created = jobs.create_job(
                session,
                job_type=request.kind,
                recipient_email=request.to[0],
                payload=request.to_payload(),
                subject=request.subject[:SUBJECT_COLUMN] if request.subject else None,
                template_id=request.template_id,
                template_data=request.data or None,
                priority=ROW_PRIORITY[request.priority],
                max_retries=kind.retries_allowed(get_settings().max_retries),
                scheduled_at=_naive_utc(scheduled_at),
                idempotency_key=request.idempotency_key,
                status=status.SCHEDULED if scheduled else status.PENDING,
            )
            session.expunge(job)
    except (DataError, IntegrityError) as exc:
        # The request passed validation but the row cannot hold it: not an outage.
        cause = str(exc.orig).splitlines()[0] if exc.orig else type(exc).__name__
        raise InvalidEmailRequest("payload", f"the job cannot be stored: {cause}") from None
    except SQLAlchemyError as exc:
        raise DatabaseUnavailable(
            f"cannot store the job on the primary database ({type(exc).__name__}); "
            "nothing was queued"
        ) from None
    return job, created


def publish_job(app: Any, job_id: uuid.UUID, job_type: str, priority: str, **options: Any) -> None:
    """Publish the message for a stored job (used by beat's relays and dispatcher)."""
    kind = kind_for_task(f"email_worker.send_{job_type}") or get_kind("email")
    app.send_task(
        kind.task_name,
        kwargs={"job_id": str(job_id)},
        queue=get_settings().queues[priority],
        ignore_result=True,
        kwargsrepr=repr({"job_id": str(job_id)}),
        **options,
    )


def _naive_utc(moment: dt.datetime | None) -> dt.datetime | None:
    # The tables keep UTC in TIMESTAMP WITHOUT TIME ZONE, as the original schema does.
    return moment.astimezone(dt.UTC).replace(tzinfo=None) if moment else None
