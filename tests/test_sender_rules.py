"""Sender rules a worker keeps: it delivers, or says plainly that it does not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from email_worker.config import get_settings
from tests.conftest import TEST_ENV
from tests.support.http import http_get
from tests.support.ports import free_port
from tests.support.processes import running, running_worker, start_worker_process
from tests.support.smtp_server import SmtpServer
from tests.support.waiting import wait_for, wait_for_log


def test_a_worker_without_email_provider_refuses_to_start(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    worker = start_worker_process(log, env={"EMAIL_PROVIDER": ""})
    with running(worker):
        assert worker.wait(timeout=60) != 0
    assert "configuration error: EMAIL_PROVIDER is required for a worker" in log.read_text()


def test_an_outbox_worker_says_so_in_its_log_and_on_health(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    port = free_port()
    worker = start_worker_process(
        log,
        env={
            "EMAIL_PROVIDER": "outbox",
            "OUTBOX_DIR": str(tmp_path / "outbox"),
            "SERVER_PORT": str(port),
            "SERVER_HOST": "127.0.0.1",
        },
    )
    with running(worker):
        text = wait_for_log(log, "EMAIL_PROVIDER names outbox")
        line = next(line for line in text.splitlines() if "EMAIL_PROVIDER names outbox" in line)
        assert "WARNING" in line.upper()

        def providers() -> dict[str, dict[str, object]] | None:
            try:
                status, body = http_get(port, "/health")
            except OSError:
                return None
            return json.loads(body)["providers"] if status == 200 else None

        outbox = wait_for(providers, "a healthy worker")["outbox"]
    assert outbox["delivers"] is False
    assert str(outbox["warning"]).startswith("EMAIL_PROVIDER names outbox: ")


def test_a_live_producer_refuses_marketing_and_bulk_it_cannot_unsubscribe_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from email_worker.config import reset_settings
    from email_worker.errors import InvalidEmailRequest
    from email_worker.kinds import get_kind
    from email_worker.tasks import send_bulk, task_for

    monkeypatch.setenv("TRACKING_SECRET", "")
    reset_settings()
    try:
        newsletter = dict(get_kind("newsletter").sample_data)
        with pytest.raises(InvalidEmailRequest, match="TRACKING_SECRET is not set") as refused:
            task_for("newsletter").delay(to="ann@example.com", data=newsletter)
        assert refused.value.field == "kind"
        with pytest.raises(InvalidEmailRequest, match="bulk email cannot be sent"):
            send_bulk.delay(
                template_id="newsletter", recipients=[{"to": "ann@example.com", "data": newsletter}]
            )
        # Transactional kinds go on; outside live mode nothing reaches a mailbox anyway.
        monkeypatch.setenv("DELIVERY_MODE", "outbox")
        reset_settings()
        assert get_settings().marketing_problem() is None
    finally:
        monkeypatch.undo()
        reset_settings()


def test_a_newsletter_carries_one_click_unsubscribe_and_the_postal_address(
    smtp: SmtpServer, tmp_path: Path
) -> None:
    from email_worker.kinds import get_kind
    from email_worker.tasks import task_for

    log = tmp_path / "worker.log"
    with running_worker(log):
        task_for("newsletter").delay(
            to="ann@example.com", data=dict(get_kind("newsletter").sample_data)
        )
        (received,) = smtp.wait_for(1, timeout=30)
    message = received.message
    assert message["List-Unsubscribe"].startswith("<https://t.example.com/u/")
    address = TEST_ENV["SENDER_POSTAL_ADDRESS"]
    assert address in message.get_body(("html",)).get_content()
    assert address in message.get_body(("plain",)).get_content()


def test_a_live_worker_without_tracking_secret_names_the_marketing_kinds_it_refuses(
    tmp_path: Path,
) -> None:
    log = tmp_path / "worker.log"
    worker = start_worker_process(log, env={"TRACKING_SECRET": ""})
    with running(worker):
        text = wait_for_log(log, "newsletter and bulk sends refused")
    line = next(line for line in text.splitlines() if "sends refused" in line)
    assert "WARNING" in line.upper() and "TRACKING_SECRET is not set" in line
