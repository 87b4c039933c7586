"""The producer's side of a send: validate, write the tracked row, then publish.

Called from :meth:`EmailWorkerCelery.send_task` for every email task, so a bad
payload raises :class:`InvalidEmailRequest` in the producer's process and nothing
reaches the queue.  A tracked send, or any send delayed beyond
``SCHEDULE_THRESHOLD``, is first committed as an ``email_jobs`` row on the primary;
the message then carries only the job id, which is the task id.

The database layer and the template renderer (SQLAlchemy, Jinja2) are imported on the
first send that needs them: a producer imports this package in its own process, and a
fast-path send with inline content needs neither.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

from celery.result import AsyncResult

from email_worker.config import Settings, get_settings
from email_worker.errors import InvalidEmailRequest
from email_worker.kinds import Kind
from email_worker.mime.email_request import EmailRequest
from email_worker.observability import metrics
from email_worker.privacy import redacted_request
from email_worker.producer.validation import validate_request

# A publish that cannot reach the broker gives up fast: the committed row is relayed later.
TRACKED_PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2}
# The worker's settings govern a send's time limits, not the producer's (they would travel
# in the message); callbacks cannot travel with a send that waits in the database.
_WORKER_OPTIONS = ("time_limit", "soft_time_limit")
_CALLBACKS = ("link", "link_error", "chain", "chord", "group_id")
# The HTTP API's option: the API key a stored job belongs to. It is not published.
API_KEY_OPTION = "email_worker_api_key_id"
# The HTTP API's option for a test key's send: its stored job goes only to the outbox.
TEST_SEND_OPTION = "email_worker_test_send"


@dataclass
class PreparedSend:
    """What to publish, or the result to hand back when nothing is published now."""

    kwargs: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)
    result: AsyncResult | None = None
    durable: bool = False  # a row holds the job: a failed publish is relayed, not lost


def check_request(
    kind: Kind, args: Any, kwargs: dict[str, Any], *, settings: Settings | None = None
) -> EmailRequest:
    """Validate a send request for ``kind`` against the templates this process can see.

    The data must hold every variable the template needs, in the producer as in the worker.
    ``settings`` are those the caller read at its entry (by default, this process's).
    """
    settings = get_settings() if settings is None else settings
    if args:
        raise InvalidEmailRequest("args", "email tasks take keyword arguments only")
    return validate_request(
        kind,
        kwargs,
        template_exists=template_exists,
        template_variables=template_variables,
        max_message_bytes=settings.max_message_bytes,
        settings=settings,
    )


def template_exists(template_id: str) -> bool:
    """Whether this process's renderer finds the template (Jinja2 loads on the first ask)."""
    from email_worker.rendering.renderer import get_renderer

    return get_renderer().exists(template_id)


def template_variables(template_id: str) -> frozenset[str]:
    """The variables the template needs, as this process's renderer finds it."""
    from email_worker.rendering.renderer import get_renderer

    return get_renderer().required_variables(template_id)


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
    settings = get_settings()
    request = check_request(kind, args, kwargs, settings=settings)
    now = dt.datetime.now(dt.UTC)
    when = send_at(options, now)
    scheduled = (when - now).total_seconds() > settings.schedule_threshold
    payload = request.to_payload()
    if scheduled and any(options.get(name) for name in _CALLBACKS):
        raise InvalidEmailRequest(
            "eta",
            "a send delayed beyond SCHEDULE_THRESHOLD waits in the database and cannot "
            "carry link, link_error, chain or chord callbacks",
        )
    api_key_id = options.get(API_KEY_OPTION)
    test_send = bool(options.get(TEST_SEND_OPTION))
    if test_send and not request.tracked:
        raise InvalidEmailRequest("tracked", "a test send is always tracked")
    own = ("countdown", "eta", API_KEY_OPTION, TEST_SEND_OPTION)
    options = {k: v for k, v in options.items() if k not in own}
    # An explicit None, because Celery merges the task's own limits back in otherwise.
    options.update(dict.fromkeys(_WORKER_OPTIONS))
    options.setdefault("queue", settings.queues[request.priority])
    # Results only when asked for, or when a chord or group must join on them.
    options.setdefault("ignore_result", not (options.get("chord") or options.get("group_id")))
    options.setdefault("kwargsrepr", repr(redacted_request(payload)))
    if not (request.tracked or scheduled):
        if when > now:
            options["eta"] = when
        metrics.count_queued(kind.name, options["queue"])
        return PreparedSend(kwargs=payload, options=options)

    from email_worker.producer.stored_jobs import store_job  # first tracked or scheduled send

    job_id, created = store_job(
        kind,
        request,
        scheduled_at=when if when > now else None,
        scheduled=scheduled,
        job_id=_caller_job_id(options.get("task_id")),
        api_key_id=api_key_id,
        test_send=test_send,
    )
    if created and request.tracked:
        metrics.count_tracked(kind.name)
    result = AsyncResult(str(job_id), app=app)
    if scheduled or not created:
        # Beat dispatches it when due; an idempotency key seen before was published then.
        return PreparedSend(kwargs={}, result=result)
    options.update(
        task_id=str(job_id),
        kwargsrepr=repr({"job_id": str(job_id)}),
        retry_policy=TRACKED_PUBLISH_RETRY,
    )
    if when > now:
        options["eta"] = when
    metrics.count_queued(kind.name, options["queue"])
    return PreparedSend(kwargs={"job_id": str(job_id)}, options=options, durable=True)


def _caller_job_id(task_id: Any) -> uuid.UUID | None:
    """A caller's ``task_id`` becomes the job id, so the AsyncResult they hold is the job's."""
    if task_id is None:
        return None
    try:
        return uuid.UUID(str(task_id))
    except ValueError:
        raise InvalidEmailRequest(
            "task_id", "a tracked or scheduled email's task id must be a UUID"
        ) from None
