"""Whatever a producer publishes, a worker's logs and events show no personal data."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import purge_queues, queue_key
from tests.support.processes import running_worker
from tests.support.raw_messages import foreign_app, publish_raw
from tests.support.smtp_server import SmtpServer
from tests.support.waiting import wait_for_log

ADDRESS = "secret.person@example.org"
SUBJECT = "Secret subject 7731"
BODY = "Secret body 5521"
DATA_VALUE = "Secret-data-8812"
SENDER_NAME = "Secret Sender 3390"
SECRETS = (ADDRESS, SUBJECT, BODY, DATA_VALUE, SENDER_NAME)

INLINE = {
    "to": ADDRESS,
    "subject": SUBJECT,
    "text": BODY,
    "html": f"<p>{BODY}</p>",
    "from_name": SENDER_NAME,
    "metadata": {"account": DATA_VALUE},
}
TEMPLATED = {
    "to": [ADDRESS],
    "data": {
        "user_name": DATA_VALUE,
        "product_name": "Example Bookings",
        "login_url": "https://app.example.com/login",
    },
}


@pytest.fixture
def task_events(celery_app) -> Iterator[list[dict[str, Any]]]:  # type: ignore[no-untyped-def]
    """Every task event the workers send while the test runs, as Flower receives them."""
    events: list[dict[str, Any]] = []
    ready = threading.Event()
    with celery_app.connection_for_read() as connection:
        receiver = celery_app.events.Receiver(connection, handlers={"*": events.append})
        receiver.on_consume_ready = lambda *args, **kwargs: ready.set()
        thread = threading.Thread(target=receiver.capture, kwargs={"limit": None}, daemon=True)
        thread.start()
        assert ready.wait(30), "the event receiver did not start"
        yield events
        receiver.should_stop = True
        thread.join(10)


@pytest.mark.slow
@pytest.mark.parametrize("log_format", ["json", "text"])
def test_messages_from_any_producer_leave_no_personal_data_in_logs_or_events(
    log_format: str,
    smtp: SmtpServer,
    redis_client,
    task_events: list[dict[str, Any]],
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    from email_worker.tasks import send_email

    purge_queues(redis_client)
    other_service = foreign_app()
    queue = queue_key("default")
    by_name = [
        other_service.send_task("email_worker.send_email", kwargs=INLINE, queue=queue).id,
        other_service.send_task(
            "email_worker.send_welcome_email", kwargs=TEMPLATED, queue=queue
        ).id,
    ]
    # Refused by validation in the pool process: Celery logs the task's failure.
    other_service.send_task(
        "email_worker.send_email", kwargs={**INLINE, "data": {"x": DATA_VALUE}}, queue=queue
    )
    # Refused by Celery itself, which logs the whole body and its headers.
    other_service.send_task("email_worker.not_a_task", kwargs=INLINE, queue=queue)
    publish_raw(other_service, queue, f'[[], {{"to": "{ADDRESS}", "subject": "{SUBJECT}"')
    publish_raw(other_service, queue, f'[[], {{"text": "{BODY}"}}, {{}}]', eta="not a date")
    publish_raw(other_service, queue, f'{{"to": "{ADDRESS}"}}')
    last = send_email.delay(to="ann@example.com", subject="Last", text="x").id
    log = tmp_path / "worker.log"
    with running_worker(log, "--task-events", LOG_FORMAT=log_format):  # as Flower turns them on
        smtp.wait_for(3, timeout=60)
        content = wait_for_log(log, last, timeout=30)
    assert sorted(r.message["Message-ID"] for r in smtp.received) == sorted(
        f"<{task_id}@mail.example.com>" for task_id in [*by_name, last]
    )
    for refused in ("unregistered task", "invalid task message", "Can't decode message body"):
        assert refused in content
    assert content.count("email failed") == 1
    shown_events = repr(task_events)
    assert "task-received" in shown_events and by_name[0] in shown_events
    for secret in SECRETS:
        assert secret not in content
        assert secret not in shown_events
