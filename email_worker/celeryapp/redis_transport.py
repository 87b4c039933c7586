"""kombu's Redis transport, with one Redis client per channel instead of one per command.

kombu builds a new ``redis.Redis`` for every publish, acknowledgement and queue-length
query that is not part of its event loop (``Channel.conn_or_acquire``).  Building one
costs more than the command it sends: on a two-core machine it was about 0.35 ms of a
0.55 ms ``delay()`` call, and the same again for every acknowledgement in a worker's
main process.  A client holds no connection of its own (it borrows one from the
channel's pool for each command, and is safe to share between threads), so this
channel builds it once and keeps it for as long as the channel lives.

Used for ``redis://`` brokers (``broker_transport`` in :mod:`email_worker.celeryapp.settings`);
everything else is kombu's own.
"""

from __future__ import annotations

from typing import Any

from kombu import Connection
from kombu.transport import redis

TRANSPORT = "email_worker.celeryapp.redis_transport:Transport"


class Channel(redis.Channel):
    """A Redis channel that keeps its synchronous client."""

    _sync_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        if self._sync_client is None:
            self._sync_client = super()._create_client()
        return self._sync_client


class Transport(redis.Transport):
    """kombu's Redis transport with :class:`Channel`."""

    Channel = Channel


# A connection names its transport by its alias (``info()``, ``as_uri()``): ours reads as
# "redis", so Flower, ``celery inspect`` and the worker's banner see the URL they expect.
# The key is this module's own name, so no other app's connections are affected.
Connection.resolve_aliases[TRANSPORT] = "redis"
