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
its Redis channel with another pool (``master_for``), so the same hooks apply to it;
everything else is kombu's own, but for two faults further down: a Redis that refuses
writes (full under ``noeviction``), and a Redis lost while a worker holds messages.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from time import monotonic
from typing import Any

from kombu import Connection
from kombu.transport import redis, virtual
from redis.exceptions import RedisError, ResponseError
from redis.sentinel import Sentinel

from email_worker.celeryapp.broker_refusals import Refusals
from email_worker.config.sentinel import SENTINEL_PORT, parse_sentinel_url
from email_worker.redis_client import is_out_of_memory, try_a_write

TRANSPORT = "email_worker.celeryapp.redis_transport:Transport"
SENTINEL_TRANSPORT = "email_worker.celeryapp.redis_transport:SentinelTransport"


# --- A full Redis -------------------------------------------------------------------------
# Redis at maxmemory under noeviction refuses every write: the copy of a message taken
# (MULTI with ZADD and HSET), an acknowledgement (MULTI with ZREM and HDEL), the mutex of
# the visibility-timeout restore, a publish. kombu raises those refusals out of its timers
# and out of the consumer's read, which stops the worker. While writes are refused, the
# worker takes no new message (BRPOP would move it out of Redis with no copy left there),
# keeps the acknowledgements it could not write to write them when Redis has room (were
# the worker lost meanwhile, Redis redelivers those messages after the visibility timeout),
# and tries one harmless write a second to learn when Redis has room again.

REFUSALS = Refusals()


def _refused(exc: Exception, doing: str) -> None:
    """Note a refused write, or raise ``exc`` when it is some other error."""
    if not is_out_of_memory(exc):
        raise exc
    REFUSALS.refused(exc, doing)


class QoS(redis.QoS):
    """kombu's unacknowledged-message bookkeeping, which survives refused writes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.unremoved: list[str] = []  # acknowledged here, still in Redis's unacked index

    def can_consume(self) -> bool:
        """No new message while Redis refuses writes."""
        return not REFUSALS.active and bool(super().can_consume())

    def append(self, message: Any, delivery_tag: str) -> None:
        """Keep a copy of a message taken; if Redis just filled up, the worker runs it anyway."""
        try:
            super().append(message, delivery_tag)
        except ResponseError as exc:
            # Taken by a BRPOP sent before the refusals began: it is out of the queue, so
            # running it is the one way not to lose it.
            _refused(exc, "keeping a copy of a message taken")
            virtual.QoS.append(self, message, delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        """Acknowledge; one Redis refuses is written when it has room."""
        try:
            super().ack(delivery_tag)
        except ResponseError as exc:
            _refused(exc, "acknowledging a message")
            self.unremoved.append(delivery_tag)
            virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        """Reject; one Redis refuses stays in its unacked index and comes back from there."""
        try:
            super().reject(delivery_tag, requeue=requeue)
        except ResponseError as exc:
            _refused(exc, "rejecting a message")
            virtual.QoS.ack(self, delivery_tag)

    def write_unremoved(self, client: Any) -> None:
        """Write the acknowledgements Redis refused."""
        while self.unremoved:
            self._remove_from_indices(self.unremoved[0], client.pipeline()).execute()
            self.unremoved.pop(0)


class Poller(redis.MultiChannelPoller):
    """kombu's poller of a connection's channels, quiet and paused while Redis is full."""

    def maybe_restore_messages(self) -> None:
        """Restore messages past the visibility timeout, unless Redis refuses writes."""
        if REFUSALS.active:
            return
        try:
            super().maybe_restore_messages()
        except ResponseError as exc:
            _refused(exc, "restoring messages past the visibility timeout")

    def check_writes(self) -> None:
        """While Redis refuses writes, try one a second; when it goes through, resume."""
        if not REFUSALS.active:
            return
        for channel in list(self._channels):
            try:
                with channel.conn_or_acquire() as client:
                    try_a_write(client)
                    channel.qos.write_unremoved(client)
            except ResponseError as exc:
                _refused(exc, "checking whether Redis has room")
                return
            except channel.connection_errors:
                return  # the consumer reconnects; the next check tries again
        REFUSALS.accepted()


class Channel(redis.Channel):
    """A Redis channel that keeps the client it sends its commands with."""

    QoS = QoS
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

    def maybe_refresh_binding_expiry(self) -> None:
        """Refresh queue bindings (kombu's timer, every second), unless Redis refuses writes."""
        if REFUSALS.active:
            return
        try:
            super().maybe_refresh_binding_expiry()
        except ResponseError as exc:
            _refused(exc, "refreshing queue bindings")

    # --- A Redis lost while the worker holds messages --------------------------------------
    # When the worker's connection to Redis is lost, Celery closes it; closing the channel
    # puts back the messages it holds, through a connection pool it builds anew from the
    # transport's connection details, which the closing connection has already dropped
    # (``transport.client`` is None). kombu then raises AttributeError: 'NoneType' object
    # has no attribute 'hostname' (the trace of celery/kombu#582, still so in kombu 5.7),
    # which Celery takes for an unrecoverable error: the worker exits instead of
    # reconnecting. The channel keeps the details it was opened with and lends them back.

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._opened_with = self.connection.client

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        transport = self.connection
        if transport.client is not None or self._opened_with is None:
            return dict(super()._connparams(asynchronous=asynchronous))
        transport.client = self._opened_with
        try:
            return dict(super()._connparams(asynchronous=asynchronous))
        finally:
            transport.client = None


class Transport(redis.Transport):
    """kombu's Redis transport with :class:`Channel` and :class:`Poller`."""

    Channel = Channel

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cycle = Poller()  # type: ignore[assignment]  # kombu types it as the virtual cycle

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        """kombu's timers, and the check for room while Redis refuses writes."""
        super().register_with_event_loop(connection, loop)
        cycle: Any = self.cycle
        previous = getattr(cycle, "_write_check_tref", None)
        if previous is not None:
            previous.cancel()
        cycle._write_check_tref = loop.call_repeatedly(1.0, cycle.check_writes)


class SentinelChannel(Channel, redis.SentinelChannel):
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
        if now < self._follow_at or self._closing:
            return
        follower = self._follower or self._make_follower()
        if follower is None:
            return
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

    def _sentinel_managed_pool(self, asynchronous: bool = False) -> Any:
        # kombu reads the Sentinels from the transport's connection details, which a closing
        # connection has already dropped: lent back as in ``Channel._connparams`` above.
        transport = self.connection
        if transport.client is not None or self._opened_with is None:
            return super()._sentinel_managed_pool(asynchronous)
        transport.client = self._opened_with
        try:
            return super()._sentinel_managed_pool(asynchronous)
        finally:
            transport.client = None

    def _make_follower(self) -> Sentinel | None:
        """The channel's Sentinels (those of its URL), asked with :attr:`follow_timeout`."""
        client = self.connection.client or self._opened_with
        if client is None:
            return None
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


class SentinelTransport(Transport):
    """kombu's Sentinel transport (its default port), with :class:`SentinelChannel` and the
    hooks of :class:`Transport`."""

    default_port = redis.SentinelTransport.default_port  # type: ignore[assignment]
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
