"""The Redis this package talks to, and the one way it makes a client for it.

The broker, the result backend, the rate limits, the circuits and the poison-message
counts all use the Redis the settings name: ``BROKER_URL`` when it is a Redis URL,
else the ``REDIS_*`` settings.
"""

from __future__ import annotations

from urllib.parse import quote

import redis
from redis.retry import Retry

from email_worker.config import Settings

REDIS_SCHEMES = ("redis://", "rediss://")
OUT_OF_MEMORY = "broker out of memory"


def is_redis_url(url: str) -> bool:
    """Whether ``url`` names a Redis server."""
    return url.startswith(REDIS_SCHEMES)


def settings_redis_url(settings: Settings) -> str:
    """The URL of the Redis that the ``REDIS_*`` settings name."""
    password = quote(settings.redis_password.reveal(), safe="")  # '/', '%', '@' are legal
    auth = f":{password}@" if password else ""
    return f"redis://{auth}{settings.redis_host}:{settings.redis_port}/{settings.redis_db}"


def redis_url(settings: Settings) -> str:
    """``BROKER_URL`` when it is Redis, else the URL of the ``REDIS_*`` settings."""
    broker = settings.broker_url.reveal()
    return broker if is_redis_url(broker) else settings_redis_url(settings)


def redis_client(url: str, *, timeout: float, retry: Retry | None = None) -> redis.Redis:
    """A new client for ``url`` whose calls and connects give up after ``timeout`` seconds.

    ``retry`` replaces redis-py's own retry policy when given.
    """
    options = {} if retry is None else {"retry": retry}
    return redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, **options
    )


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis refusing a write at ``maxmemory`` (also inside a pipeline)."""
    seen: BaseException | None = exc
    while seen is not None:
        if type(seen).__name__ == "OutOfMemoryError" or "> 'maxmemory'" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
