"""How the app is configured, and what this service's own processes do as they start.

A producer imports the app inside another service, so the app reads only this
package's settings module.  The ``celery`` commands (``worker``, ``beat``, ``flower``,
...) and the ``email-worker`` command are this service's own processes: they also
read ``./config.yaml``, and a worker refuses settings it cannot send with.
"""

from __future__ import annotations

import gc
import os
from typing import Any

import click
from celery import Celery, signals

from email_worker.config import SettingsError, get_settings, use_local_config_file
from email_worker.worker_checks import refuse_missing_extras, refuse_unsafe_pool

SETTINGS_MODULE = "email_worker.celery_settings"


def _own_process(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    # Eager, so it runs before the options whose defaults read the app's configuration.
    if value:
        os.environ["CONFIG_FILE"] = value
    use_local_config_file()


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


signals.celeryd_init.connect(refuse_unsafe_pool)


@signals.worker_init.connect
def _check_worker_settings(**_: Any) -> None:
    try:
        get_settings().check_worker()
    except SettingsError as exc:
        # Celery logs and ignores an exception raised by a signal handler; this one must
        # stop the worker before it takes a message it cannot send.
        raise SystemExit(f"email-worker: configuration error: {exc}") from None
    refuse_missing_extras(get_settings())
    # What the main process has loaded is shared with the pool processes it forks; the
    # collector would otherwise touch (and so copy) those pages in every one of them.
    gc.freeze()
