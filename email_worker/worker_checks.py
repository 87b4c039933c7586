"""Checks a ``celery -A email_worker worker`` process makes before it consumes anything."""

from __future__ import annotations

from typing import Any

from celery import concurrency
from celery.concurrency.prefork import TaskPool as PreforkPool
from celery.concurrency.solo import TaskPool as SoloPool


def refuse_unsafe_pool(conf: Any = None, options: Any = None, **_: Any) -> None:
    """Stop a worker started with a pool under which sends can outlive their limits.

    Connected to ``celeryd_init``, which only the command-line worker sends: the
    in-process workers of tests and embedding programs may use any pool.
    """
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


def _pool_name(pool: Any) -> str:
    target = f"{getattr(pool, '__module__', '')}:{getattr(pool, '__qualname__', '')}"
    names = [alias for alias, path in concurrency.ALIASES.items() if path == target]
    return names[0] if names else target
