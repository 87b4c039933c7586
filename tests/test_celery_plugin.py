"""Celery's own pytest fixtures (``celery.contrib.pytest``, enabled by pytest-celery) with this
app: an in-process worker on the real Redis delivering to the real SMTP server."""

from __future__ import annotations

from typing import Any

import pytest
from celery.contrib import pytest as celery_fixtures

from tests.conftest import purge_queues
from tests.support.smtp_server import SmtpServer

# pytest-celery 1.x names its Docker-based worker ``celery_worker``; this is Celery's
# in-process one, started on the ``celery_app`` fixture (this project's app, see conftest).
celery_worker = celery_fixtures.celery_worker


@pytest.fixture(scope="session")
def celery_worker_parameters() -> dict[str, Any]:
    # The ping check needs a result; this app ignores results unless asked.
    return {"perform_ping_check": False, "loglevel": "WARNING"}


@pytest.fixture
def empty_queues(redis_client) -> None:  # type: ignore[no-untyped-def]
    purge_queues(redis_client)


@pytest.mark.usefixtures("empty_queues")
def test_send_email_through_celerys_in_process_worker(
    smtp: SmtpServer,
    celery_worker: Any,
) -> None:
    from email_worker.tasks import send_email

    result = send_email.apply_async(
        kwargs={"to": "ann@example.com", "subject": "Your invoice", "text": "Thanks"}
    )
    [received] = smtp.wait_for(1, timeout=20)
    assert received.recipients == ["ann@example.com"]
    assert received.message["Subject"] == "Your invoice"
    assert received.message["Message-ID"] == f"<{result.id}@mail.example.com>"
    assert celery_worker.hostname  # the worker the fixture started in this process
