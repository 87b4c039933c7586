"""``/health`` and ``/metrics`` of a worker or beat, served from a daemon thread.

The server runs in the worker's main process, never in a pool process, so a scrape
or a probe never takes a pool slot. A port already taken (a second worker on the
same host) is logged once as an error and the process carries on without a server.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from celery import Celery

from email_worker.config import Settings

log = logging.getLogger(__name__)

HealthReport = Callable[[], tuple[int, dict[str, Any]]]
MetricsText = Callable[[], tuple[bytes, str]]


class WorkerCollector:
    """``email_worker_up`` and ``queue_size``, read from the broker when scraped."""

    def __init__(self, app: Celery, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    def collect(self) -> Iterator[Any]:
        """Yield the samples of one scrape; a broker that does not answer yields no size."""
        from prometheus_client.core import GaugeMetricFamily

        from email_worker.observability.health import queue_sizes

        yield GaugeMetricFamily("email_worker_up", "1 while this process runs.", value=1)
        sizes = GaugeMetricFamily("queue_size", "Messages waiting in a queue.", labels=["queue"])
        queues = [*self.settings.queues.values(), self.settings.periodic_queue]
        try:
            found = queue_sizes(self.app, queues, self.settings.health_timeout)
        except Exception as exc:
            log.debug("queue sizes not read", extra={"error": type(exc).__name__})
            found = {}
        for queue, size in found.items():
            sizes.add_metric([queue], size)
        yield sizes


class BeatCollector:
    """``email_worker_up`` and when beat last sent each periodic task."""

    def __init__(self, last_runs: dict[str, float]) -> None:
        self.last_runs = last_runs

    def collect(self) -> Iterator[Any]:
        """Yield the samples of one scrape."""
        from prometheus_client.core import GaugeMetricFamily

        yield GaugeMetricFamily("email_worker_up", "1 while this process runs.", value=1)
        runs = GaugeMetricFamily(
            "email_beat_last_run_timestamp_seconds",
            "When beat last sent a periodic task (Unix time).",
            labels=["task"],
        )
        for task, at in sorted(self.last_runs.items()):
            runs.add_metric([task], at)
        yield runs


def metrics_text(collector: Any, multiprocess_dir: Path | None) -> MetricsText:
    """A function that renders the metrics: the pool processes' files, or this process's."""
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        REGISTRY,
        CollectorRegistry,
        generate_latest,
        multiprocess,
    )

    own = CollectorRegistry(auto_describe=False)
    own.register(collector)
    if multiprocess_dir is not None:
        multiprocess.MultiProcessCollector(own, path=str(multiprocess_dir))
        registries = [own]
    else:
        registries = [REGISTRY, own]

    def render() -> tuple[bytes, str]:
        return b"".join(generate_latest(registry) for registry in registries), CONTENT_TYPE_LATEST

    return render


def _handler(health: HealthReport, render_metrics: MetricsText) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/health":
                status, body = health()
                self._send(status, json.dumps(body).encode(), "application/json")
            elif path == "/metrics":
                text, content_type = render_metrics()
                self._send(200, text, content_type)
            else:
                self._send(404, b'{"error": "not found"}', "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # probes every few seconds would drown the worker's own lines

    return Handler


class HealthServer:
    """A running ``/health`` and ``/metrics`` server."""

    def __init__(self, server: ThreadingHTTPServer) -> None:
        self.server = server
        self.port = server.server_address[1]
        self.pid = os.getpid()

    def forget_in_child(self) -> None:
        """Close the listening socket a forked pool process inherited (the parent keeps it)."""
        # The solo pool sends worker_process_init in the worker's own process: keep it there.
        if os.getpid() != self.pid:
            self.server.socket.close()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()


def start_server(
    host: str, port: int, health: HealthReport, render_metrics: MetricsText, *, setting: str
) -> HealthServer | None:
    """Serve in a daemon thread; None (and one error line) when the port is taken."""
    try:
        server = ThreadingHTTPServer((host, port), _handler(health, render_metrics))
    except OSError as exc:
        taken = exc.errno == errno.EADDRINUSE
        log.error(
            "%s: no /health or /metrics from this process (set %s to a free port, "
            "or 0 for no server); carrying on without them",
            f"port {port} is already in use" if taken else f"cannot listen on {host}:{port}",
            setting,
        )
        return None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health-server", daemon=True).start()
    log.info("serving /health and /metrics on %s:%d", host, port)
    return HealthServer(server)
