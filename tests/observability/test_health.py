"""``/health`` of a worker and of beat, as a load balancer or an operator sees it."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_ENV, purge_queues
from tests.support.http import http_get
from tests.support.ports import free_port, free_port_pair
from tests.support.processes import running, start_beat_process, start_worker_process
from tests.support.redis_server import RedisServer
from tests.support.smtp_server import SmtpServer
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_for

FIELDS = {"status", "timestamp", "version", "uptime", "queue", "database", "providers"}


def health(port: int) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of ``/health``."""
    status, body = http_get(port, "/health")
    return status, json.loads(body)


def health_is(port: int, code: int) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        status, body = health(port)
        return body if status == code else None

    return check


@pytest.mark.slow
def test_worker_health_shows_each_dependency_and_fails_when_broker_or_primary_is_away(
    smtp: SmtpServer, tmp_path: Path
) -> None:
    http_port = free_port()
    redis = RedisServer(tmp_path / "redis").start()
    proxy = TcpProxy().open()
    database_url = TEST_ENV["DATABASE_URL"].replace(":5432/", f":{proxy.port}/")
    worker = start_worker_process(
        tmp_path / "worker.log",
        env={
            "SERVER_PORT": str(http_port),
            "SERVER_HOST": "127.0.0.1",
            "BROKER_URL": redis.url,
            "DATABASE_URL": database_url,
        },
    )
    try:
        with running(worker):
            body = wait_for(health_is(http_port, 200), "a healthy worker")
            assert set(body) == FIELDS
            assert body["status"] == "healthy"
            assert isinstance(body["uptime"], int)
            assert body["queue"]["status"] == "up" and body["queue"]["latency_ms"] >= 0
            assert body["database"]["primary"]["status"] == "up"
            assert body["database"]["replica"]["status"] == "up"
            assert body["providers"]["smtp"]["configured"] is True

            redis.kill()
            body = wait_for(health_is(http_port, 503), "the broker reported down")
            assert body["status"] == "unhealthy"
            assert body["queue"]["status"] == "down" and body["queue"]["error"]
            assert body["database"]["primary"]["status"] == "up"

            redis.start()
            wait_for(health_is(http_port, 200), "the broker back up")

            proxy.close()
            body = wait_for(health_is(http_port, 503), "the primary reported down")
            assert body["database"]["primary"]["status"] == "down"
            assert body["database"]["primary"]["error"]
            assert body["queue"]["status"] == "up"

            proxy.open()
            wait_for(health_is(http_port, 200), "the primary back up")
            assert worker.poll() is None
    finally:
        redis.kill()
        proxy.close()


@pytest.mark.slow
def test_beat_health_lists_when_it_last_sent_each_periodic_task(
    redis_client, tmp_path: Path
) -> None:
    port = free_port_pair()
    beat = start_beat_process(
        tmp_path / "beat", env={"SERVER_PORT": str(port), "SERVER_HOST": "127.0.0.1"}
    )
    try:
        with running(beat):
            # Beat serves on SERVER_PORT + 1, beside a worker on SERVER_PORT.
            body = wait_for(
                lambda: (
                    (b := health(port + 1)[1])["beat"]["last_run"].get(
                        "email_worker.dispatch_due_jobs"
                    )
                    and b
                ),
                "beat's last runs",
                log=tmp_path / "beat" / "log",
            )
            assert set(body) >= FIELDS
            assert body["status"] == "healthy"
            status, text = http_get(port + 1, "/metrics")
            assert status == 200
            assert (
                b'email_beat_last_run_timestamp_seconds{task="email_worker.dispatch_due_jobs"}'
                in text
            )
    finally:
        purge_queues(redis_client)


@pytest.mark.slow
def test_a_taken_port_is_one_clear_error_and_the_worker_still_sends(
    smtp: SmtpServer, redis_client, celery_app, tmp_path: Path
) -> None:
    from email_worker.tasks import send_email

    purge_queues(redis_client)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        log = tmp_path / "worker.log"
        worker = start_worker_process(
            log, env={"SERVER_PORT": str(port), "SERVER_HOST": "127.0.0.1"}
        )
        with running(worker):
            send_email.delay(to="ann@example.com", subject="Still sent", text="Hello")
            smtp.wait_for(1, timeout=30)
    lines = [line for line in log.read_text().splitlines() if f"port {port}" in line]
    assert len(lines) == 1
    assert '"level": "error"' in lines[0] and "SERVER_PORT" in lines[0]


@pytest.mark.slow
def test_health_asked_while_the_pool_starts_leaves_every_pool_process_able_to_send(
    smtp: SmtpServer, redis_client: Any, tmp_path: Path
) -> None:
    """A load balancer may ask from the first moment; the pool forks while it does."""
    from email_worker.tasks import send_email

    purge_queues(redis_client)
    port = free_port()
    asking = threading.Event()
    asking.set()

    def ask() -> None:
        while asking.is_set():
            with contextlib.suppress(OSError):
                http_get(port, "/health")

    askers = [threading.Thread(target=ask, daemon=True) for _ in range(2)]
    for asker in askers:
        asker.start()
    log = tmp_path / "worker.log"
    worker = start_worker_process(
        log,
        "--max-tasks-per-child=3",  # pool processes are replaced while /health is asked
        env={"SERVER_PORT": str(port), "SERVER_HOST": "127.0.0.1", "PROCESS_TIMEOUT": "5"},
    )
    try:
        with running(worker):
            for i in range(12):
                send_email.delay(to=f"reader{i}@example.com", subject=f"Hello {i}", text="x")
            smtp.wait_for(12, timeout=30)
    finally:
        asking.clear()
        for asker in askers:
            asker.join(timeout=10)
    assert "time limit" not in log.read_text(errors="replace").lower()
