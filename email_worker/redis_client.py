"""The Redis this package talks to, and the one way it makes a client for it.

The broker, the result backend, the rate limits, the circuits and the poison-message
counts all use the Redis the settings name: ``BROKER_URL`` when it is a Redis URL
(``redis://``, ``rediss://`` or ``sentinel://``), else the ``REDIS_*`` settings.

Through Sentinel (a ``sentinel://`` URL, or ``REDIS_SENTINELS``) a client asks the
Sentinels for the master named ``REDIS_SENTINEL_MASTER`` before each new connection.
After a failover its next command fails on the old master (connection refused or
closed, or ``READONLY`` once the old master is a replica): redis-py drops that
connection and, on the retry, asks the Sentinels again and connects to the new master.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import redis
from redis.retry import Retry
from redis.sentinel import Sentinel

from email_worker.config import Settings, get_settings
from email_worker.config.sentinel import (
    SentinelURL,
    is_sentinel_url,
    parse_sentinel_addresses,
    parse_sentinel_url,
)

REDIS_SCHEMES = ("redis://", "rediss://", "sentinel://")
OUT_OF_MEMORY = "broker out of memory"


def is_redis_url(url: str) -> bool:
    """Whether ``url`` names a Redis server, directly or through Sentinel."""
    return url.startswith(REDIS_SCHEMES)


def settings_redis_url(settings: Settings) -> str:
    """The URL of the Redis that the ``REDIS_*`` settings name.

    ``sentinel://...`` when ``REDIS_SENTINELS`` is set, else ``redis://host:port/db``.
    """
    password = settings.redis_password.reveal()
    if settings.redis_sentinels:
        sentinels = parse_sentinel_addresses(settings.redis_sentinels)
        return SentinelURL(sentinels, settings.redis_db, password=password).url()
    auth = f":{quote(password, safe='')}@" if password else ""  # '/', '%', '@' are legal
    return f"redis://{auth}{settings.redis_host}:{settings.redis_port}/{settings.redis_db}"


def redis_url(settings: Settings) -> str:
    """``BROKER_URL`` when it is Redis, else the URL of the ``REDIS_*`` settings.

    A ``sentinel://`` URL comes back in one form (credentials and database on every
    Sentinel), so one Redis has one URL whichever way it was written.
    """
    broker = settings.broker_url.reveal()
    if is_sentinel_url(broker):
        return parse_sentinel_url(broker).url()
    return broker if is_redis_url(broker) else settings_redis_url(settings)


def sentinel_kwargs(settings: Settings, timeout: float) -> dict[str, Any]:
    """How to connect to the Sentinels themselves: ``timeout`` and their password.

    redis-py (and kombu) give the Sentinels only the socket options of the master's
    connections when no such options are given; Celery's result backend gives them
    nothing, so a silent Sentinel would hang it. Every client of this package passes these.
    """
    options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if settings.redis_sentinel_password:
        options["password"] = settings.redis_sentinel_password.reveal()
    return options


def redis_client(
    url: str, *, timeout: float, retry: Retry | None = None, settings: Settings | None = None
) -> redis.Redis:
    """A new client for ``url`` whose calls and connects give up after ``timeout`` seconds.

    ``retry`` replaces redis-py's own retry policy when given. For a ``sentinel://``
    URL the client follows the master of ``settings`` (the current settings when not
    given): ``REDIS_SENTINEL_MASTER``, with ``REDIS_SENTINEL_PASSWORD`` for the Sentinels.
    """
    options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if retry is not None:
        options["retry"] = retry
    if is_sentinel_url(url):
        return sentinel_master(url, settings or get_settings(), **options)
    return redis.Redis.from_url(url, **options)


def sentinel_master(url: str, settings: Settings, **options: Any) -> redis.Redis:
    """A client of the master the Sentinels of ``url`` name, with connection ``options``."""
    target = parse_sentinel_url(url)
    timeout = float(options.get("socket_timeout") or settings.broker_timeout)
    sentinel = Sentinel(
        list(target.sentinels),
        sentinel_kwargs=sentinel_kwargs(settings, timeout),
        db=target.db,
        username=target.username or None,
        password=target.password or None,
        **options,
    )
    return sentinel.master_for(settings.redis_sentinel_master)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis refusing a write at ``maxmemory`` (also inside a pipeline)."""
    seen: BaseException | None = exc
    while seen is not None:
        if type(seen).__name__ == "OutOfMemoryError" or "> 'maxmemory'" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


WRITE_CHECK_KEY = "email-worker:broker-write-check"
"""A key that never exists: LPUSHX to it writes nothing, and a full Redis refuses it."""


def try_a_write(client: redis.Redis) -> None:
    """One write that changes nothing; raises what Redis answers (out of memory when full)."""
    client.lpushx(WRITE_CHECK_KEY, "")
