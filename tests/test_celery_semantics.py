"""Email tasks keep Celery's own semantics: task ids, callbacks, headers, canvas, retry policy."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
import redis
from celery import chain, chord, group

from email_worker.celeryapp.app import app
from email_worker.errors import InvalidEmailRequest
from email_worker.kinds import get_kind
from tests.conftest import TEST_ENV, purge_queues
from tests.support.smtp_server import SmtpServer

DOMAIN = "mail.example.com"
VERIFICATION = dict(get_kind("email_verification").sample_data)


COLLECTED = f"{TEST_ENV['QUEUE_NAME']}.collected"


# Registered before the module's worker starts, as a task of the producer's own codebase.
@app.task(name="tests.collect")
def collect(*args: object, **kwargs: object) -> None:
    """Record what the task was called with, in Redis."""
    client = redis.Redis(host="127.0.0.1", port=6379)
    client.rpush(COLLECTED, json.dumps({"args": args, "kwargs": kwargs}, default=str))


def collected(count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
    """The calls of :func:`collect` so far, once there are ``count`` of them."""
    client = redis.Redis(host="127.0.0.1", port=6379)
    deadline = time.monotonic() + timeout
    while client.llen(COLLECTED) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return [json.loads(item) for item in client.lrange(COLLECTED, 0, -1)]


@pytest.fixture
def fresh(redis_client):  # type: ignore[no-untyped-def]
    redis_client.delete(COLLECTED)
    yield
    redis_client.delete(COLLECTED)


def test_each_task_declares_its_retry_policy_where_celery_users_look(
    worker,
    celery_app,  # type: ignore[no-untyped-def]
) -> None:
    from email_worker.errors import TransientError

    inspect = celery_app.control.inspect(timeout=5, destination=[worker.hostname])
    registered = inspect.registered(
        "max_retries", "retry_backoff", "retry_backoff_max", "autoretry_for"
    )
    (tasks,) = registered.values()
    reset = next(t for t in tasks if t.startswith("email_worker.send_password_reset "))
    assert "max_retries=5" in reset and "retry_backoff=2.0" in reset
    assert "retry_backoff_max=120.0" in reset and "TransientError" in reset
    from email_worker.tasks import send_payment_receipt, send_welcome_email

    assert send_payment_receipt.max_retries == 8
    assert send_welcome_email.max_retries == 3  # MAX_RETRIES, the kind has no limit of its own
    assert issubclass(send_welcome_email.autoretry_for[0], TransientError)
    assert send_welcome_email.retry_jitter is True


@pytest.mark.usefixtures("worker", "clean_tables")
def test_a_callers_task_id_is_kept_on_both_paths(smtp: SmtpServer) -> None:
    from email_worker.tasks import send_email, send_email_verification

    fast_id, tracked_id = str(uuid.uuid4()), str(uuid.uuid4())
    assert (
        send_email.apply_async(
            kwargs={"to": "ann@example.com", "subject": "Hi", "text": "x"}, task_id=fast_id
        ).id
        == fast_id
    )
    assert (
        send_email_verification.apply_async(
            kwargs={"to": "ann@example.com", "data": VERIFICATION}, task_id=tracked_id
        ).id
        == tracked_id
    )
    smtp.wait_for(2)
    assert {r.message["Message-ID"] for r in smtp.received} == {
        f"<{fast_id}@{DOMAIN}>",
        f"<{tracked_id}@{DOMAIN}>",
    }


def test_a_tracked_task_id_that_is_not_a_uuid_is_refused(redis_client) -> None:  # type: ignore[no-untyped-def]
    from email_worker.tasks import send_email_verification

    purge_queues(redis_client)
    with pytest.raises(InvalidEmailRequest, match="task_id"):
        send_email_verification.apply_async(
            kwargs={"to": "ann@example.com", "data": VERIFICATION}, task_id="signup-42"
        )


@pytest.mark.usefixtures("worker", "clean_tables", "fresh")
def test_link_and_link_error_callbacks_run(smtp: SmtpServer) -> None:
    from email_worker.tasks import send_email, send_email_verification

    smtp.handler.refuse("nobody@example.com", "550 5.1.1 No such user")
    sent = send_email_verification.apply_async(
        kwargs={"to": "ann@example.com", "data": VERIFICATION}, link=collect.s()
    )
    failed = send_email.apply_async(
        kwargs={"to": "nobody@example.com", "subject": "Hi", "text": "x"},
        link_error=collect.s(),
    )
    calls = collected(2)
    assert len(calls) == 2
    results = [c["args"][0] for c in calls if isinstance(c["args"][0], dict)]
    assert results and results[0]["job_id"] == sent.id
    errbacks = [c for c in calls if not isinstance(c["args"][0], dict)]
    assert errbacks and failed.id in json.dumps(errbacks[0])


@pytest.mark.usefixtures("worker", "fresh")
def test_an_email_in_a_chain_a_group_and_a_chord(smtp: SmtpServer) -> None:
    from email_worker.tasks import send_email

    def email(n: int):  # type: ignore[no-untyped-def]
        return send_email.si(to="ann@example.com", subject=f"Canvas {n}", text="x")

    chain(email(1), collect.s()).apply_async()
    group(email(2), email(3)).apply_async()
    chord([email(4), email(5)], collect.s()).apply_async()
    smtp.wait_for(5)
    calls = collected(2)
    assert sorted(str(r.message["Subject"]) for r in smtp.received) == [
        f"Canvas {n}" for n in range(1, 6)
    ]
    chained = [c for c in calls if isinstance(c["args"][0], dict)]
    joined = [c for c in calls if isinstance(c["args"][0], list)]
    assert chained and chained[0]["args"][0]["provider"] == "smtp"
    assert joined and len(joined[0]["args"][0]) == 2


def test_a_scheduled_send_with_callbacks_is_refused(
    redis_client,  # type: ignore[no-untyped-def]
) -> None:
    from email_worker.tasks import send_email

    with pytest.raises(InvalidEmailRequest, match="callbacks"):
        send_email.apply_async(
            kwargs={"to": "ann@example.com", "subject": "Later", "text": "x"},
            countdown=3600,
            link=collect.s(),
        )
