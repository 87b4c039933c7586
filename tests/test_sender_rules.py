"""Sender rules a worker keeps: it delivers, or says plainly that it does not."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.http import http_get
from tests.support.ports import free_port
from tests.support.processes import running, start_worker_process
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
