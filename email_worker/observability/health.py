"""The health of a worker or beat: its broker, its databases, its providers.

Each dependency is probed in parallel and bounded by HEALTH_TIMEOUT; a report is
reused for a second, so a storm of probes cannot hammer the broker or the database.
The broker or the primary being unreachable makes the process unhealthy (503); the
replica being down only degrades it (reads fall back to the primary).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as ProbeTimeout
from contextlib import contextmanager
from typing import Any

from celery import Celery
from kombu import Connection

from email_worker.config import Settings
from email_worker.privacy import redact_text
from email_worker.redis_client import OUT_OF_MEMORY, is_out_of_memory, try_a_write

CACHE_SECONDS = 1.0
_ERROR_CHARS = 200

Probe = Callable[[], dict[str, Any]]


@contextmanager
def broker_channel(app: Celery, timeout: float) -> Iterator[Any]:
    """A channel on the app's broker whose connect and calls are bounded by ``timeout``."""
    options = {
        **(app.conf.broker_transport_options or {}),
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
    }
    url = app.conf.broker_read_url or app.conf.broker_url
    with Connection(url, connect_timeout=timeout, transport_options=options) as connection:
        connection.connect()
        yield connection.default_channel


def queue_sizes(app: Celery, queues: list[str], timeout: float) -> dict[str, int]:
    """Messages waiting in each queue; Redis priority sub-queues are counted with theirs."""
    sizes: dict[str, int] = {}
    with broker_channel(app, timeout) as channel:
        client = getattr(channel, "client", None)
        if client is not None and hasattr(channel, "priority_steps"):
            # kombu keeps one Redis list per priority step: "name", then "name\x06\x163", ...
            keys = {
                queue: [
                    queue,
                    *(f"{queue}{channel.sep}{step}" for step in channel.priority_steps if step),
                ]
                for queue in queues
            }
            with client.pipeline(transaction=False) as pipe:
                for names in keys.values():
                    for name in names:
                        pipe.llen(name)
                lengths = iter(pipe.execute())
            for queue, names in keys.items():
                sizes[queue] = sum(int(next(lengths)) for _ in names)
            return sizes
        for queue in queues:
            try:
                _, count, _ = channel.queue_declare(queue=queue, passive=True)
            except Exception:
                channel = channel.connection.client.channel()  # a failed declare closes it
                continue
            sizes[queue] = int(count)
    return sizes


class BrokerOutOfMemory(Exception):
    """Redis answers but refuses writes: at ``maxmemory`` under ``noeviction``."""


def probe_broker(app: Celery, timeout: float) -> dict[str, Any]:
    """Whether the broker answers and takes writes, and how fast."""
    started = time.monotonic()
    master = None
    with broker_channel(app, timeout) as channel:
        client = getattr(channel, "client", None)
        if client is not None and hasattr(client, "ping"):
            client.ping()
            _check_redis_writes(client)
            master = sentinel_master_of(client)
    report: dict[str, Any] = {"status": "up", "latency_ms": _since(started)}
    if master is not None:
        report["sentinel_master"] = master
    return report


def sentinel_master_of(client: Any) -> str | None:
    """``host:port`` of the master a client through Sentinel is connected to, else None."""
    address = getattr(client.connection_pool, "master_address", None)
    return None if address is None else f"{address[0]}:{address[1]}"


def _check_redis_writes(client: Any) -> None:
    # A full Redis still answers PING and hands out messages, but refuses to publish or
    # to acknowledge them: for the service, it is down.
    try:
        try_a_write(client)
    except Exception as exc:
        if is_out_of_memory(exc):
            raise BrokerOutOfMemory(
                f"{OUT_OF_MEMORY}: Redis refuses writes (maxmemory reached, noeviction)"
            ) from None
        raise


def probe_database(engine: Any, ping: Callable[[Any], str | None]) -> dict[str, Any]:
    """Whether a database answers ``ping``, how fast, and which host answered."""
    started = time.monotonic()
    host = ping(engine)
    result: dict[str, Any] = {"status": "up", "latency_ms": _since(started)}
    if host is not None:
        result["host"] = host  # of several hosts (a failover set), the one in the role now
    return result


def error_text(exc: BaseException) -> str:
    """A failure as the health endpoint shows it: one line, addresses masked, short."""
    cause = getattr(exc, "orig", None) or exc
    first = (str(cause).strip().splitlines() or [""])[0]
    text = redact_text(first) or type(cause).__name__
    return f"{type(cause).__name__}: {text}"[:_ERROR_CHARS]


class HealthCheck:
    """Runs the probes of one process and remembers the last report for a second."""

    def __init__(
        self,
        app: Celery,
        settings: Settings,
        *,
        version: str,
        engines: Callable[[], Any],
        ping: Callable[[Any], str | None],
        providers: Callable[[Settings], dict[str, Any]],
        extra: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        """Probe ``app``'s broker, the databases ``engines()`` returns (with ``ping``), and
        ``providers``."""
        self.app = app
        self.settings = settings
        self.version = version
        self.engines = engines
        self.ping = ping
        self.providers = providers
        self.extra = extra
        self.started = time.monotonic()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="health-probe")
        self._lock = threading.Lock()
        self._cached: tuple[float, int, dict[str, Any]] | None = None

    def report(self) -> tuple[int, dict[str, Any]]:
        """The HTTP status and JSON body of ``/health``."""
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= CACHE_SECONDS:
                self._cached = (now, *self._probe())
            return self._cached[1], self._cached[2]

    def _probe(self) -> tuple[int, dict[str, Any]]:
        timeout = self.settings.health_timeout
        engines = self.engines()
        probes: dict[str, Probe] = {
            "queue": lambda: probe_broker(self.app, timeout),
            "primary": lambda: probe_database(engines.primary, self.ping),
            "providers": lambda: self.providers(self.settings),
        }
        if engines.has_replica:
            probes["replica"] = lambda: probe_database(engines.replica, self.ping)
        results = self._run(probes, timeout)
        replica = results.get("replica", {"status": "not_configured"})
        providers = results["providers"]
        if providers.get("status") == "down":
            providers = {"status": "unknown", "error": providers.get("error")}
        healthy = results["queue"]["status"] == "up" and results["primary"]["status"] == "up"
        status = "healthy" if healthy else "unhealthy"
        if healthy and replica["status"] == "down":
            status = "degraded"
        body: dict[str, Any] = {
            "status": status,
            "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "version": self.version,
            "uptime": int(time.monotonic() - self.started),
            "queue": results["queue"],
            "database": {"primary": results["primary"], "replica": replica},
            "providers": providers,
        }
        if self.extra is not None:
            body.update(self.extra())
        return (200 if healthy else 503), body

    def _run(self, probes: dict[str, Probe], timeout: float) -> dict[str, dict[str, Any]]:
        futures = {name: self._pool.submit(probe) for name, probe in probes.items()}
        deadline = time.monotonic() + timeout
        results: dict[str, dict[str, Any]] = {}
        for name, future in futures.items():
            try:
                results[name] = future.result(max(deadline - time.monotonic(), 0.0))
            except ProbeTimeout:
                results[name] = {"status": "down", "error": f"no answer in {timeout:g}s"}
            except Exception as exc:
                results[name] = {"status": "down", "error": error_text(exc)}
        return results


def _since(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)
