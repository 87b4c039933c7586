"""Checks a ``celery -A email_worker worker`` process makes before it consumes anything.

:mod:`email_worker.celeryapp.startup` runs them when Celery's worker command starts this
app's worker.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import concurrency

from email_worker.config import HARD_LIMIT_MARGIN, Settings, get_settings
from email_worker.extras import MissingExtra, require_extra

RABBITMQ_ACK_TIMEOUT = 30 * 60.0
"""RabbitMQ's default delivery acknowledgement timeout (``consumer_timeout``), in seconds."""


def refuse_unsafe_pool(conf: Any, options: dict[str, Any] | None) -> None:
    """Stop a worker started with a pool under which sends can outlive their limits.

    Only the command-line worker is checked: the in-process workers of tests and
    embedding programs may use any pool.
    """
    # The pools' modules (billiard's) here, not at import: producers import this module too.
    from celery.concurrency.prefork import TaskPool as PreforkPool
    from celery.concurrency.solo import TaskPool as SoloPool

    given = options or {}
    chosen = given.get("pool") or given.get("pool_cls") or (conf.worker_pool if conf else None)
    pool = concurrency.get_implementation(chosen) if isinstance(chosen, str) else chosen
    if pool is None or (isinstance(pool, type) and issubclass(pool, PreforkPool | SoloPool)):
        return
    name = _pool_name(pool)
    raise SystemExit(
        f"email-worker cannot run with the {name!r} pool: time limits (PROCESS_TIMEOUT) do "
        "not apply under it and its sends share one SMTP connection, so a send can outlive "
        "its lease and go out twice. Use the default 'prefork' pool ('solo' runs one send "
        "at a time, for trying things out)."
    )


def refuse_missing_extras(settings: Settings) -> None:
    """Stop a worker whose providers or DKIM signing need modules that are not installed."""
    from email_worker.providers import require_sdk  # a worker's own: producers import this module

    try:
        for provider in (*settings.provider_chain(None), *(p for _, p in settings.kind_providers)):
            require_sdk(provider)
        if settings.dkim_domain:
            require_extra("DKIM signing", "dkim")
    except MissingExtra as exc:
        raise SystemExit(f"email-worker: {exc}") from None


def warn_sender_rules(settings: Settings) -> None:
    """Say at start-up what this worker will not deliver.

    A provider in use that keeps emails on the host (outbox, console), personal data
    sealed with the published development keys, and the marketing kinds refused in live
    mode for want of unsubscribe links or a postal address.
    """
    log = logging.getLogger("email_worker.worker")
    for warning in (settings.non_delivering_warning(), settings.development_keys_warning()):
        if warning:
            log.warning("email-worker: %s", warning)
    problem = settings.marketing_problem()
    if problem:
        from email_worker.kinds import MARKETING_CATEGORIES, all_kinds

        refused = [kind.name for kind in all_kinds() if kind.category in MARKETING_CATEGORIES]
        log.warning("email-worker: %s and bulk sends refused: %s", ", ".join(refused), problem)


def _pool_name(pool: Any) -> str:
    target = f"{getattr(pool, '__module__', '')}:{getattr(pool, '__qualname__', '')}"
    names = [alias for alias, path in concurrency.ALIASES.items() if path == target]
    return names[0] if names else target


def refuse_unacknowledged_past_rabbitmq_timeout(conf: Any) -> None:
    """Stop a worker on RabbitMQ whose messages could stay unacknowledged past its timeout.

    A message is acknowledged after its send, so a countdown the broker holds (up to
    SCHEDULE_THRESHOLD) and the send (up to its hard time limit) are both spent unacknowledged.
    RabbitMQ closes the channel of a consumer that holds a delivery longer than its
    ``consumer_timeout`` and hands the message to another worker: the email would go out twice.
    """
    url = str((conf.broker_url if conf else None) or "")
    if not url.startswith(("amqp://", "amqps://", "pyamqp://")):
        return
    settings = get_settings()
    held = settings.schedule_threshold + settings.process_timeout + HARD_LIMIT_MARGIN + 10
    if held > RABBITMQ_ACK_TIMEOUT:
        raise SystemExit(
            "email-worker: configuration error: SCHEDULE_THRESHOLD + PROCESS_TIMEOUT + 25s "
            f"({held:g}s) must be under RabbitMQ's delivery acknowledgement timeout "
            f"(consumer_timeout, {RABBITMQ_ACK_TIMEOUT:g}s by default): a message held longer "
            "is taken back from the worker and the email sent twice"
        )
