"""``/health`` of a worker and of beat, as a load balancer or an operator sees it."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_ENV, purge_queues
from tests.support.http import http_get
from tests.support.ports import free_port, free_port_pair
from tests.support.processes import running, start_beat_process, start_worker_process
from tests.support.smtp_server import SmtpServer
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


class TcpProxy:
    """A TCP proxy to PostgreSQL that a test can cut off, as a network failure would."""

    def __init__(self, target: int = 5432) -> None:
        self.target = target
        self.port = free_port()
        self.connections: list[socket.socket] = []
        self.listener: socket.socket | None = None

    def open(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def close(self) -> None:
        if self.listener is not None:
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
            self.listener.close()
            self.listener = None
        for connection in self.connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()
        self.connections.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            self.connections += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=_pipe, args=(source, sink), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)


def start_redis(port: int) -> subprocess.Popen[bytes]:
    redis = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--daemonize",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    wait_for(
        lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() or True, "redis"
    )
    return redis


@pytest.mark.slow
def test_worker_health_shows_each_dependency_and_fails_when_broker_or_primary_is_away(
    smtp: SmtpServer, tmp_path: Path
) -> None:
    redis_port, http_port = free_port(), free_port()
    redis = start_redis(redis_port)
    proxy = TcpProxy().open()
    database_url = TEST_ENV["DATABASE_URL"].replace(":5432/", f":{proxy.port}/")
    worker = start_worker_process(
        tmp_path / "worker.log",
        env={
            "SERVER_PORT": str(http_port),
            "SERVER_HOST": "127.0.0.1",
            "BROKER_URL": f"redis://127.0.0.1:{redis_port}/0",
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
            redis.wait()
            body = wait_for(health_is(http_port, 503), "the broker reported down")
            assert body["status"] == "unhealthy"
            assert body["queue"]["status"] == "down" and body["queue"]["error"]
            assert body["database"]["primary"]["status"] == "up"

            redis = start_redis(redis_port)
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
        redis.wait()
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
