"""Celery signal handlers: count what tasks do, and serve ``/health`` and ``/metrics``.

An email task counts its successes from its own hooks; failures and retries are
counted here, from Celery's signals (:mod:`email_worker.observability.attempts`).
A worker serves on SERVER_PORT from its main process; beat serves on SERVER_PORT + 1,
so both can run on one host with one setting.
Celery sends these signals for every app in the process: the workers, beat and tasks
of a host service that imports the package are left alone.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from celery import signals

from email_worker.celeryapp.email_celery import is_this_app
from email_worker.config import get_settings
from email_worker.observability import attempts, metrics

if TYPE_CHECKING:
    from email_worker.observability.health import HealthCheck
    from email_worker.observability.http_server import HealthServer

BEAT_PORT_OFFSET = 1
_Served = TypeVar("_Served")

_beat_last_runs: dict[str, float] = {}
_server: HealthServer | None = None
_metrics_directory: Path | None = None
_private_directory: Path | None = None


def _email_task(task: Any) -> bool:
    """Whether ``task`` is one of this app's email tasks (they have a kind)."""
    return is_this_app(getattr(task, "app", None)) and getattr(task, "kind", None) is not None


# Successes are counted by the email tasks' own hooks (observability/attempts.py), which
# cost no signal dispatch. Failures and retries are counted here: Celery reports some of
# them from the worker's main process (a hard time limit, a message rejected for good),
# where no hook of the task runs, and always through these signals.


@signals.task_failure.connect
@metrics.never_raises
def _count_failure(sender: Any = None, exception: BaseException | None = None, **_: Any) -> None:
    if _email_task(sender):
        attempts.count_failure(sender, exception)


@signals.task_retry.connect
@metrics.never_raises
def _count_retry(sender: Any = None, reason: Any = None, **_: Any) -> None:
    if _email_task(sender):
        attempts.count_retry(sender, getattr(reason, "exc", reason))


def _forks(worker: Any) -> bool:
    from celery.concurrency import get_implementation
    from celery.concurrency.prefork import TaskPool

    pool = get_implementation(worker.pool_cls)
    return isinstance(pool, type) and issubclass(pool, TaskPool)


def health_check(
    app: Any, settings: Any, extra: Callable[[], dict[str, Any]] | None = None
) -> HealthCheck:
    """The ``/health`` report of a worker, beat or the web app: broker, databases, providers.

    The database driver and the providers are imported by the first report, not here: a
    worker's main process loads them only once something asks for ``/health`` (on
    PostgreSQL the databases are probed through psycopg alone, without SQLAlchemy).
    """
    from email_worker import __version__
    from email_worker.observability.health import HealthCheck

    return HealthCheck(
        app,
        settings,
        version=__version__,
        engines=_engines,
        ping=_ping,
        providers=_providers_health,
        extra=extra,
    )


def _engines() -> Any:
    from email_worker.db.probes import databases

    return databases(get_settings())


def _ping(database: Any) -> str | None:
    from email_worker.db.probes import ping

    return ping(database)


def _providers_health(settings: Any) -> dict[str, Any]:
    from email_worker.providers.failover import providers_health

    return providers_health(settings)


_fork_guard = threading.Lock()
_guarding_forks = False


def _between_forks(serve: Callable[[], _Served]) -> Callable[[], _Served]:
    """``serve``, run while the worker forks no pool process (and no fork while it runs).

    A report imports modules the first time it runs (the database layer, the driver, its
    codecs). A pool process forked while the server's thread is inside an import inherits
    that module's import lock held by a thread it does not have, and hangs on its first
    import of the same module. The worker's main process takes this lock before each fork.
    """

    def guarded() -> _Served:
        with _fork_guard:
            return serve()

    return guarded


def _guard_forks() -> None:
    global _guarding_forks
    if not _guarding_forks:
        os.register_at_fork(
            before=_fork_guard.acquire,
            after_in_parent=_fork_guard.release,
            after_in_child=_fork_guard.release,
        )
        _guarding_forks = True


@signals.worker_init.connect
def _start_worker_observability(sender: Any = None, **_: Any) -> None:
    global _server, _metrics_directory, _private_directory
    from email_worker.observability.http_server import WorkerCollector, metrics_text, start_server

    if not is_this_app(getattr(sender, "app", None)):
        return
    if _forks(sender):
        # Chosen before the pool processes fork, so that they all write where it says.
        _metrics_directory, made_here = metrics.prepare_multiprocess_directory()
        _private_directory = _metrics_directory if made_here else None
    settings = get_settings()
    if not settings.server_port:
        return
    metrics.start_known_series(settings)
    health = health_check(sender.app, settings)
    report = health.report
    render = metrics_text(WorkerCollector(sender.app, settings), _metrics_directory)
    # No probe before the fork: the main process loads the database layer with the first
    # /health request, and the pool processes are forked without it.
    if _forks(sender):
        _guard_forks()
        report, render = _between_forks(report), _between_forks(render)
    _server = start_server(
        settings.server_host, settings.server_port, report, render, setting="SERVER_PORT"
    )


@signals.worker_process_init.connect
def _close_inherited_server(**_: Any) -> None:
    if _server is not None:
        _server.forget_in_child()


@signals.worker_process_shutdown.connect
@metrics.never_raises
def _mark_pool_process_dead(**_: Any) -> None:
    if _metrics_directory is not None:  # chosen by this app's worker before it forked
        metrics.mark_process_dead(os.getpid())


@signals.worker_shutdown.connect
def _stop_worker_observability(**_: Any) -> None:
    global _server
    if _server is not None:
        _server.stop()
        _server = None
    if _private_directory is not None:
        metrics.remove_directory(_private_directory)


@signals.beat_init.connect
def _start_beat_observability(sender: Any = None, **_: Any) -> None:
    global _server
    from email_worker.observability.http_server import BeatCollector, metrics_text, start_server

    if not is_this_app(getattr(sender, "app", None)):
        return
    settings = get_settings()
    if not settings.server_port:
        return
    signals.after_task_publish.connect(_note_beat_run, weak=False)
    health = health_check(sender.app, settings, extra=beat_health)
    render = metrics_text(BeatCollector(_beat_last_runs), None)
    _server = start_server(
        settings.server_host,
        settings.server_port + BEAT_PORT_OFFSET,
        health.report,
        render,
        setting="SERVER_PORT (beat serves on SERVER_PORT + 1)",
    )


@signals.beat_init.connect
def _quiet_refused_beat_sends(sender: Any = None, **_: Any) -> None:
    """While the broker refuses its sends (down, or full), beat logs that once a minute."""
    from email_worker.celeryapp.broker_refusals import quiet_beat_send_errors

    if is_this_app(getattr(sender, "app", None)):
        quiet_beat_send_errors()


def _note_beat_run(sender: Any = None, headers: Any = None, **_: Any) -> None:
    task = (headers or {}).get("task") or sender
    _beat_last_runs[str(task)] = time.time()


def beat_health() -> dict[str, Any]:
    """What beat adds to ``/health``: when it last sent each periodic task."""
    last_run = {
        task: dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="seconds")
        for task, at in sorted(_beat_last_runs.items())
    }
    return {"beat": {"last_run": last_run}}
