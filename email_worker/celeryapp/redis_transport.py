"""kombu's Redis transport, with one Redis client per channel instead of one per command.

kombu builds a new ``redis.Redis`` for every publish, acknowledgement and queue-length
query that is not part of its event loop (``Channel.conn_or_acquire``).  Building one
costs more than the command it sends: on a two-core machine it was about 0.35 ms of a
0.55 ms ``delay()`` call, and the same again for every acknowledgement in a worker's
main process.  A client holds no connection of its own (it borrows one from the
channel's pool for each command, and is safe to share between threads), so this
channel builds it once for its pool and keeps it until the channel closes.

Used for ``redis://`` brokers (``broker_transport`` in :mod:`email_worker.celeryapp.settings`);
everything else is kombu's own, but for two faults further down: a Redis that refuses
writes (full under ``noeviction``), and a Redis lost while a worker holds messages.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu import Connection
from kombu.transport import redis, virtual
from redis.exceptions import ResponseError

from email_worker.celeryapp.broker_refusals import Refusals
from email_worker.redis_client import is_out_of_memory

TRANSPORT = "email_worker.celeryapp.redis_transport:Transport"


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
# LPUSHX to a key that never exists: a write Redis refuses when full, and a no-op otherwise.
WRITE_CHECK_KEY = "email-worker:broker-write-check"


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
                    client.lpushx(WRITE_CHECK_KEY, "")
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


# A connection names its transport by its alias (``info()``, ``as_uri()``): ours reads as
# "redis", so Flower, ``celery inspect`` and the worker's banner see the URL they expect.
# The key is this module's own name, so no other app's connections are affected.
Connection.resolve_aliases[TRANSPORT] = "redis"
