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
from time import monotonic
from typing import Any

from kombu import Connection
from kombu.transport import redis
from redis.exceptions import RedisError
from redis.sentinel import Sentinel

from email_worker.config.sentinel import SENTINEL_PORT, parse_sentinel_url

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
    """kombu's Sentinel channel, keeping its client, and moving to a new master at once.

    Its pools are Sentinel master pools (``Sentinel.master_for``): a connection asks the
    Sentinels for the master when it connects, and only then. After ``SENTINEL FAILOVER``
    the old master stays a master until Sentinel turns it into a replica, about ten
    seconds later (Sentinel waits four of its publish periods); a connection still open to
    it goes on publishing and consuming there, and what it holds when it becomes a replica
    is dropped in its resync with the new master. So, at most every
    :attr:`follow_interval` seconds (on a publish or an acknowledgement, and on a timer of
    the worker's event loop), the channel asks the Sentinels which master they name and
    closes its connections to any other: the next command connects to the new master.
    """

    follow_interval = 0.5
    # The Sentinels are asked with this timeout, shorter than the broker's: a publish is
    # held at most three times this when they do not answer, and then, until they do, only
    # every ``follow_backoff`` seconds (the connections' own errors find the master).
    follow_timeout = 0.25
    follow_backoff = 10.0
    _follow_at = 0.0
    _follower: Sentinel | None = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        """The channel's client, once its connections follow the master the Sentinels name."""
        self.follow_master()
        with super().conn_or_acquire(client) as kept:
            yield kept

    def follow_master(self) -> None:
        """Close the connections to a master the Sentinels no longer name (at most every
        :attr:`follow_interval` seconds)."""
        now = monotonic()
        if now < self._follow_at:
            return
        follower = self._follower or self._make_follower()
        self._follow_at = now + self.follow_interval
        try:
            named = follower.discover_master(str(getattr(self, "master_name", "")))
        except (RedisError, OSError):
            self._follow_at = now + self.follow_backoff
            return
        for pool in (self._pool, self._async_pool):
            if pool is not None and pool.master_address not in (None, named):
                # Asking the pool records the new master and closes its idle connections.
                pool.get_master_address()
        # The worker's BRPOP connection is never idle: closing it is what kombu does after a
        # read error, and its event loop sends the next BRPOP on a new connection.
        consuming = self.__dict__.get("client")
        connection = getattr(consuming, "connection", None)
        if (
            connection is not None
            and connection._sock is not None
            and (connection.host, connection.port) != tuple(named)
        ):
            connection.disconnect()

    def _make_follower(self) -> Sentinel:
        """The channel's Sentinels (those of its URL), asked with :attr:`follow_timeout`."""
        client = self.connection.client
        if client.alt:
            addresses = list(parse_sentinel_url(";".join(client.alt)).sentinels)
        else:
            addresses = [(client.hostname or "127.0.0.1", client.port or SENTINEL_PORT)]
        options = {
            **(getattr(self, "sentinel_kwargs", None) or {}),
            "socket_timeout": self.follow_timeout,
            "socket_connect_timeout": self.follow_timeout,
        }
        self._follower = Sentinel(addresses, sentinel_kwargs=options)
        return self._follower

    def close(self) -> None:
        """Close the channel, and the connections to the Sentinels it asked."""
        super().close()
        follower, self._follower = self._follower, None
        for sentinel in follower.sentinels if follower is not None else ():
            sentinel.close()


class SentinelTransport(redis.SentinelTransport):
    """kombu's Sentinel transport with :class:`SentinelChannel`."""

    Channel = SentinelChannel

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        """kombu's timers, and one that keeps a consuming channel on the named master."""
        super().register_with_event_loop(connection, loop)
        cycle: Any = self.cycle
        old = getattr(cycle, "_follow_master_tref", None)
        if old is not None:
            old.cancel()  # from a previous connection, as kombu does with its own timers

        def follow() -> None:
            for channel in list(cycle._channels):
                channel.follow_master()

        cycle._follow_master_tref = loop.call_repeatedly(SentinelChannel.follow_interval, follow)


# A connection names its transport by its alias (``info()``, ``as_uri()``): ours reads as
# "redis", so Flower, ``celery inspect`` and the worker's banner see the URL they expect.
# The key is this module's own name, so no other app's connections are affected.
Connection.resolve_aliases[TRANSPORT] = "redis"
Connection.resolve_aliases[SENTINEL_TRANSPORT] = "sentinel"
