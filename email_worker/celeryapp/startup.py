"""How the app is configured, and what this service's own processes do as they start.

A producer imports the app inside another service, so the app reads only this
package's settings module.  The ``celery`` commands (``worker``, ``beat``, ``flower``,
...) and the ``email-worker`` command are this service's own processes: they also
read ``./config.yaml`` and log in this service's format, and a worker refuses settings
it cannot send with.  A host service's own worker and beat, with the package imported,
are left as the host made them.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from typing import Any

import click
from celery import Celery, signals

from email_worker.celeryapp.email_celery import is_this_app
from email_worker.celeryapp.worker_checks import (
    refuse_missing_extras,
    refuse_unacknowledged_past_rabbitmq_timeout,
    refuse_unsafe_pool,
    warn_sender_rules,
)
from email_worker.config import SettingsError, get_settings, use_local_config_file

SETTINGS_MODULE = "email_worker.celeryapp.settings"

_freeze_before_forks = False
"""Set once this app's worker has started: it freezes the collector before each fork."""


def _own_process(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    # Eager, so it runs before the options whose defaults read the app's configuration.
    # Celery gives this option to the commands of this app only: `celery -A email_worker ...`.
    if value:
        os.environ["EMAIL_WORKER_CONFIG_FILE"] = value  # the flag wins over either variable
    use_local_config_file()
    # Connected here, not on import: Celery sets up no logging of its own once anything
    # receives this signal, and the signal does not say which app's worker or beat sent it.
    signals.setup_logging.connect(_log_as_this_service)


CONFIG_FILE_OPTION = click.Option(
    ["--config-file"],
    metavar="PATH",
    is_eager=True,
    expose_value=False,
    callback=_own_process,
    help="This service's config.yaml (default: CONFIG_FILE, else ./config.yaml).",
)


def configure(app: Celery) -> None:
    """Load the app's own Celery settings and mark the celery commands as our own."""
    app.config_from_object(SETTINGS_MODULE)
    app.on_after_configure.connect(_own_result_backend, weak=False)
    app.user_options["preload"].add(CONFIG_FILE_OPTION)


def _own_result_backend(sender: Celery, **_: Any) -> None:
    # Celery lets CELERY_RESULT_BACKEND win over result_backend; that variable belongs to
    # the Celery app of the service this package runs in.
    sender.backend_cls = sender.conf.get("result_backend") or "disabled"


def _log_as_this_service(**_: Any) -> None:
    from email_worker.observability.logging import configure_logging

    _refuse_wrong_settings(get_settings().validate)  # the log level and format among them
    configure_logging(get_settings())


def _refuse_wrong_settings(check: Callable[[], None]) -> None:
    try:
        check()
    except SettingsError as exc:
        # Celery logs and ignores an exception raised by a signal handler; this one must
        # stop the process before it takes a message it cannot send.
        raise SystemExit(f"email-worker: configuration error: {exc}") from None


def _runs_this_app(worker: Any) -> bool:
    return is_this_app(getattr(worker, "app", None))


@signals.celeryd_init.connect  # sent by the `celery worker` command only, whatever its app
def _prepare_worker(instance: Any = None, conf: Any = None, options: Any = None, **_: Any) -> None:
    if not _runs_this_app(instance):
        return
    _refuse_wrong_settings(get_settings().validate)
    refuse_unacknowledged_past_rabbitmq_timeout(conf)
    refuse_unsafe_pool(conf, options)
    _log_as_this_service()  # before the worker's first warnings (running as root)


@signals.worker_init.connect
def _check_worker_settings(sender: Any = None, **_: Any) -> None:
    if not _runs_this_app(sender):
        return
    _refuse_wrong_settings(get_settings().check_worker)
    refuse_missing_extras(get_settings())
    warn_sender_rules(get_settings())
    global _freeze_before_forks
    _freeze_before_forks = True


@signals.worker_before_create_process.connect  # in the main process, before each fork
def _share_with_the_pool_process(**_: Any) -> None:
    # What the main process has loaded is shared with the pool processes it forks; the
    # collector would otherwise touch (and so copy) those pages in every one of them.
    # Frozen here, not at worker_init: other worker_init receivers still load things, and
    # a pool process forked later (one replaced) shares what the main process has loaded
    # since (the database layer, once something asked for /health).
    if _freeze_before_forks:
        gc.freeze()
