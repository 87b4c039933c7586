"""kombu's Redis transport, with one Redis client per channel instead of one per command.

kombu builds a new ``redis.Redis`` for every publish, acknowledgement and queue-length
query that is not part of its event loop (``Channel.conn_or_acquire``).  Building one
costs more than the command it sends: on a two-core machine it was about 0.35 ms of a
0.55 ms ``delay()`` call, and the same again for every acknowledgement in a worker's
main process.  A client holds no connection of its own (it borrows one from the
channel's pool for each command, and is safe to share between threads), so this
channel builds it once for its pool and keeps it until the channel closes.

Used for ``redis://`` brokers (``broker_transport`` in :mod:`email_worker.celeryapp.settings`),
and for ``sentinel://`` ones through :class:`SentinelChannel`: kombu's Sentinel channel is
its Redis channel with another pool (``master_for``), so the same hook applies to it;
everything else is kombu's own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu import Connection
from kombu.transport import redis

TRANSPORT = "email_worker.celeryapp.redis_transport:Transport"
SENTINEL_TRANSPORT = "email_worker.celeryapp.redis_transport:SentinelTransport"


class KeptClient(redis.Channel):
    """A Redis channel that keeps the client it sends its commands with."""

    _commands_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        """The given client, or the channel's own, built once on the channel's current pool."""
        if client:
            yield client
            return
        # kombu drops the channel's pool after a fork and on close (``_disconnect_pools``)
        # and builds a new one when next asked: a client of the old pool would send a
        # forked child's commands down its parent's sockets, so it goes with its pool.
        kept = self._commands_client
        if kept is None or kept.connection_pool is not self.pool:
            with super().conn_or_acquire() as kept:
                self._commands_client = kept
        yield kept

    def close(self) -> None:
        """Close the channel and release its client with its pool."""
        super().close()
        self._commands_client = None


class Channel(KeptClient):
    """kombu's Redis channel, keeping its client."""


class Transport(redis.Transport):
    """kombu's Redis transport with :class:`Channel`."""

    Channel = Channel


class SentinelChannel(KeptClient, redis.SentinelChannel):
    """kombu's Sentinel channel, keeping its client.

    Its pool is a Sentinel master pool (``Sentinel.master_for``): a kept client follows a
    failover like a new one, since each of its connections asks the Sentinels for the
    master when it connects, and after a connection error kombu opens a new channel
    (with a new pool and so a new kept client).
    """


class SentinelTransport(redis.SentinelTransport):
    """kombu's Sentinel transport with :class:`SentinelChannel`."""

    Channel = SentinelChannel


# A connection names its transport by its alias (``info()``, ``as_uri()``): ours reads as
# "redis", so Flower, ``celery inspect`` and the worker's banner see the URL they expect.
# The key is this module's own name, so no other app's connections are affected.
Connection.resolve_aliases[TRANSPORT] = "redis"
Connection.resolve_aliases[SENTINEL_TRANSPORT] = "sentinel"
