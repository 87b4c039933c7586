"""PostgreSQL through psycopg alone, for the paths that must not load SQLAlchemy.

A producer's tracked call stores one row, and a renderer looks up one stored template:
neither needs SQLAlchemy, which costs a fresh process a tenth of a second and a dozen MB
to import. When both roles are PostgreSQL (:func:`applies`), such paths use the
connections made here; any other database keeps the SQLAlchemy path.

The API:

- :func:`applies`: whether the database is PostgreSQL, so the direct path may be used;
- ``with primary() as connection:``: a psycopg connection to the primary, in a
  transaction that commits when the block succeeds and rolls back when it raises;
  ``primary(transaction=False)`` instead commits each statement on its own (one round
  trip for work that is one statement);
- ``with replica() as connection:``: the same on the replica, or on the primary when
  there is no replica or it cannot be reached (the fallback is logged and counted, and
  the replica skipped for ``DB_REPLICA_RETRY_INTERVAL``, as the routing session's reads
  do: both share :func:`email_worker.db.pooling.process_replica_health`);
- :class:`DatabaseUnreachable`: raised, instead of psycopg's own error, when the
  database cannot be reached or a connection broke; its ``connection_dropped`` says that
  an open connection failed (the caller may try once more: the next use reconnects).
  Any other error of the database (a constraint, bad data) is psycopg's, raised as is;
- :func:`dispose`: drop this process's connections
  (:func:`email_worker.db.engines.dispose_engines` calls it too).

The connections keep what :mod:`email_worker.db.engines` gives the engines: the URL and
its TLS parameters, ``connect_timeout`` and several hosts with ``target_session_attrs``
(:func:`email_worker.config.database_urls.psycopg_connect_kwargs`); a small pool per
role, sized by the same settings, thread-safe and fork-safe (a child process starts with
empty pools and never uses or closes its parent's connections); a pooled connection
idle more than ``PING_AFTER_IDLE_SECONDS`` (every one, on the replica) is checked
before use; and a dropped connection, or a primary that answers "read-only" (it was
demoted), drops every pooled connection of its role, so the next use connects again
and finds the promoted standby.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.pq import TransactionStatus

from email_worker.config import get_settings
from email_worker.config.database_roles import primary_url, replica_url
from email_worker.config.database_urls import (
    PING_AFTER_IDLE_SECONDS,
    READ_ONLY_SQL_TRANSACTION,
    DatabaseUrl,
    psycopg_connect_kwargs,
)
from email_worker.db.pooling import first_line, max_lifetime, pool_size, process_replica_health
from email_worker.errors import TransientError

if TYPE_CHECKING:
    from email_worker.config import Settings

# How long a use waits for one of DB_MAX_OPEN_CONNS connections (SQLAlchemy's pool_timeout).
POOL_TIMEOUT_SECONDS = 30.0
# SQLSTATE classes and codes that mean the session is gone: a connection exception, and
# the server shutting it down (pg_terminate_backend, a fast shutdown, a crash restart).
_DROPPED_CLASSES = ("08",)
_DROPPED_STATES = ("57P01", "57P02", "57P03", READ_ONLY_SQL_TRANSACTION)


class DatabaseUnreachable(TransientError):
    """The database could not be reached, or a connection to it broke.

    ``connection_dropped``: a connection that was open failed (the server closed it, or
    the primary was demoted); every pooled connection of its role is dropped, and a new
    attempt connects again.
    """

    def __init__(self, message: str, *, connection_dropped: bool = False) -> None:
        super().__init__(message)
        self.connection_dropped = connection_dropped


class PoolExhausted(DatabaseUnreachable):
    """Every connection of a role stayed in use for POOL_TIMEOUT_SECONDS."""


def applies(settings: Settings | None = None) -> bool:
    """Whether both roles are PostgreSQL, so the direct path serves them."""
    global _applies
    settings = settings or get_settings()
    known = _applies
    if known is not None and known[0] is settings:
        return known[1]
    answer = (
        primary_url(settings).backend == "postgresql"
        and replica_url(settings).backend == "postgresql"
    )
    _applies = (settings, answer)
    return answer


_applies: tuple[Settings, bool] | None = None  # the answer for the settings last asked about


@contextmanager
def primary(*, transaction: bool = True) -> Iterator[psycopg.Connection[Any]]:
    """A connection to the primary, in a transaction (each statement its own without one)."""
    with _pools().primary.connection() as connection:
        yield from _in_transaction(connection, transaction)


@contextmanager
def replica(*, transaction: bool = True) -> Iterator[psycopg.Connection[Any]]:
    """A connection to the replica, or to the primary when it has none or it is unreachable."""
    pools = _pools()
    pool, lease = pools.primary, None
    if pools.replica is not None:
        health = process_replica_health()
        if health.replica_available:
            try:
                # Connect (and ping) now, so that a replica that is down turns into a
                # fallback here instead of an error in the caller's statement.
                lease = pools.replica.checkout()
            except PoolExhausted:
                raise  # busy, not down
            except DatabaseUnreachable as error:
                health.mark_down(pools.replica.name, error.__cause__ or error)
            else:
                health.mark_up(pools.replica.name)
                pool = pools.replica
        if lease is None:
            health.record_fallback()
    with pool.connection(lease) as connection:
        yield from _in_transaction(connection, transaction)


def dispose(close: bool = True) -> None:
    """Forget this process's connections; ``close=False`` leaves them open (a forked child)."""
    global _current
    with _lock:
        pools, _current = _current, None
    if pools is not None and close:
        pools.close()


def _in_transaction(
    connection: psycopg.Connection[Any], transaction: bool
) -> Iterator[psycopg.Connection[Any]]:
    if not transaction:
        yield connection
        return
    with connection.transaction():
        yield connection


@dataclass(frozen=True)
class _Lease:
    connection: psycopg.Connection[Any]
    born: float
    generation: int  # the pool's when checked out


@dataclass
class _Idle:
    connection: psycopg.Connection[Any]
    since: float  # when it was last given back
    born: float


class _Pool:
    """The connections of one role: up to DB_MAX_OPEN_CONNS open, DB_MAX_IDLE_CONNS kept."""

    def __init__(self, role: str, url: DatabaseUrl, settings: Settings, *, ping_always: bool):
        self.role = role
        self.name = ",".join(f"{host}:{port}" if port else host for host, port in url.hosts())
        self._kwargs = psycopg_connect_kwargs(url)
        self._ping_always = ping_always
        self._keep = pool_size(settings)
        self._lifetime = max_lifetime(settings)
        self._slots = threading.BoundedSemaphore(max(settings.db_max_open_conns, self._keep))
        self._lock = threading.Lock()
        self._idle: list[_Idle] = []
        self._generation = 0  # moved on when the pool is dropped: older connections close

    def checkout(self) -> _Lease:
        """One of this pool's connections, checked when it sat idle, or a new one."""
        if not self._slots.acquire(timeout=POOL_TIMEOUT_SECONDS):
            raise PoolExhausted(
                f"every connection to the {self.role} database ({self.name}) stayed in use "
                f"for {POOL_TIMEOUT_SECONDS:g}s"
            )
        try:
            generation = self._generation
            connection, born = self._pooled_or_new()
        except BaseException:
            self._slots.release()
            raise
        return _Lease(connection, born, generation)

    @contextmanager
    def connection(self, lease: _Lease | None = None) -> Iterator[psycopg.Connection[Any]]:
        """A connection for the block (``lease``'s, else one checked out); given back after."""
        lease = lease or self.checkout()
        connection = lease.connection
        try:
            yield connection
        except BaseException as exc:
            if _dropped(connection, exc):
                self.drop()
                _close(connection)
                raise DatabaseUnreachable(
                    f"the connection to the {self.role} database ({self.name}) was lost: "
                    f"{first_line(exc)}",
                    connection_dropped=True,
                ) from exc
            self._give_back(lease)
            raise
        else:
            self._give_back(lease)
        finally:
            self._slots.release()

    def drop(self) -> None:
        """Close every idle connection; those in use are closed when given back."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._generation += 1
        for entry in idle:
            _close(entry.connection)

    def close(self) -> None:
        """Close the idle connections (at shutdown)."""
        self.drop()

    def _pooled_or_new(self) -> tuple[psycopg.Connection[Any], float]:
        while True:
            with self._lock:
                entry = self._idle.pop() if self._idle else None
            if entry is None:
                return self._connect(), time.monotonic()
            now = time.monotonic()
            if self._lifetime is not None and now - entry.born >= self._lifetime:
                _close(entry.connection)
                continue
            if (
                self._ping_always
                or now - entry.since >= PING_AFTER_IDLE_SECONDS
                or _server_spoke(entry.connection)
            ):
                # One that sat idle (the server may have closed it, or restarted), or to
                # which the server sent something unasked (the notice that it terminates
                # the session), is checked first; a dead one is replaced, and its siblings
                # are suspect too.
                try:
                    entry.connection.execute("SELECT 1")
                except Exception:
                    _close(entry.connection)
                    self.drop()
                    continue
            return entry.connection, entry.born

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(**self._kwargs, autocommit=True)
        except psycopg.Error as exc:
            raise DatabaseUnreachable(
                f"cannot connect to the {self.role} database ({self.name}): {first_line(exc)}"
            ) from exc

    def _give_back(self, lease: _Lease) -> None:
        connection = lease.connection
        healthy = (
            not connection.closed
            and not connection.broken
            and connection.info.transaction_status == TransactionStatus.IDLE
        )
        with self._lock:
            keep = healthy and lease.generation == self._generation and len(self._idle) < self._keep
            if keep:
                self._idle.append(_Idle(connection, time.monotonic(), lease.born))
        if not keep:
            _close(connection)


def _dropped(connection: psycopg.Connection[Any], error: BaseException) -> bool:
    """Whether ``error`` means the connection is gone or points at a demoted primary."""
    if not isinstance(error, psycopg.Error):
        return False
    state = error.sqlstate or ""
    return (
        connection.closed
        or connection.broken
        or state.startswith(_DROPPED_CLASSES)
        or state in _DROPPED_STATES
    )


def _server_spoke(connection: psycopg.Connection[Any]) -> bool:
    """Whether an idle connection has something to read: the server ended it, most likely.

    One system call, no round trip: a session the server terminated (an administrator,
    a shutdown) is found before a statement is sent on it.
    """
    try:
        readable, _, _ = select.select([connection.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return True
    return bool(readable)


def _close(connection: psycopg.Connection[Any]) -> None:
    with contextlib.suppress(Exception):  # a broken socket has nothing left to say
        connection.close()


@dataclass
class _Pools:
    primary: _Pool
    replica: _Pool | None  # None: reads use the primary

    def close(self) -> None:
        self.primary.close()
        if self.replica is not None:
            self.replica.close()


_lock = threading.Lock()
_current: _Pools | None = None


def _pools() -> _Pools:
    global _current
    with _lock:
        if _current is None:
            settings = get_settings()
            primary_at, replica_at = primary_url(settings), replica_url(settings)
            if primary_at.backend != "postgresql" or replica_at.backend != "postgresql":
                raise ValueError("the direct connections serve PostgreSQL only; see applies()")
            _current = _Pools(
                primary=_Pool("primary", primary_at, settings, ping_always=False),
                replica=(
                    None
                    if replica_at == primary_at
                    else _Pool("replica", replica_at, settings, ping_always=True)
                ),
            )
        return _current


def _forget_connections_in_child() -> None:
    global _lock, _current
    # A thread of the parent may have held the lock at the moment of the fork. The
    # parent's connections are only forgotten: closing them here would end the parent's
    # sessions, and psycopg closes a connection only in the process that opened it.
    _lock = threading.Lock()
    _current = None


os.register_at_fork(after_in_child=_forget_connections_in_child)
