"""``celery -A email_worker flower`` with this service's settings, and never open to all.

Flower reads its options from its command line, ``flowerconfig.py`` and ``FLOWER_*``
variables. The service's ``FLOWER_MAX_TASKS`` (from ``config.yaml`` too) is set before
Flower reads them, so any of them overrides it; once it has read them,
:func:`apply_flower_settings` adds the service's own ``FLOWER_BASIC_AUTH``, sends Flower's
log through the service's log format, and refuses to listen beyond this machine
without authentication. Flower is imported only in the Flower process.
"""

from __future__ import annotations

import logging
from typing import Any

import click

from email_worker.config import get_settings

log = logging.getLogger("email_worker.flower")

LOCAL_ADDRESSES = frozenset({"127.0.0.1", "::1", "localhost"})


class FlowerRefused(SystemExit):
    """Flower would serve the cluster's tasks to anyone who can reach it."""


def apply_flower_settings() -> None:
    """Complete Flower's parsed options from the settings; refuse an open, remote Flower."""
    from tornado.options import options

    from email_worker.observability.logging import configure_logging

    settings = get_settings()
    configure_logging(settings)
    # Flower reads FLOWER_BASIC_AUTH itself too, and takes an empty one for a user.
    users = [user.strip() for user in options.basic_auth or () if user.strip()]
    if not users:
        users = [u.strip() for u in settings.flower_basic_auth.reveal().split(",") if u.strip()]
    if any(":" not in user for user in users):
        raise FlowerRefused("email-worker: FLOWER_BASIC_AUTH must be user:password[,user:password]")
    options.basic_auth = users
    authenticated = bool(options.basic_auth or options.auth)
    if not options.address and not options.unix_socket and not authenticated:
        options.address = "127.0.0.1"  # Flower's own default is every interface
    if not authenticated and not options.unix_socket and options.address not in LOCAL_ADDRESSES:
        raise FlowerRefused(
            f"email-worker: Flower refuses to listen on {options.address} without "
            "authentication: set FLOWER_BASIC_AUTH=user:password (several separated by "
            "commas), or listen on 127.0.0.1 only"
        )
    log.info(
        "flower options",
        extra={
            "address": options.address or "*",
            "port": options.port,
            "max_tasks": options.max_tasks,
            "basic_auth_users": len(options.basic_auth or ()),
            "enable_events": options.enable_events,
        },
    )


def _watch_flower(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    # Celery adds preload options to every subcommand; only Flower's parse needs this.
    if ctx.command.name == "flower":
        from tornado.options import options

        # Flower reads its environment, flowerconfig.py and command line after this, so
        # each of them overrides the service's setting.
        options.max_tasks = get_settings().flower_max_tasks
        options.add_parse_callback(apply_flower_settings)


FLOWER_OPTION = click.Option(
    ["--email-worker-flower"],
    is_flag=True,
    hidden=True,
    expose_value=False,
    callback=_watch_flower,
    help="Apply email-worker's Flower settings (always on).",
)
