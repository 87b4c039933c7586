"""The database engines: the primary takes every write, the replica serves reads.

Which database is which, from the settings, is :mod:`email_worker.config.database_roles`;
when both roles name the same database they share one engine.

Either role may name several hosts (:mod:`email_worker.config.database_hosts`): libpq
then connects to the first whose session suits the role, ``target_session_attrs``
``read-write`` for the primary (``DB_PRIMARY_TARGET_SESSION_ATTRS``) and
``prefer-standby`` for the replica (``DB_REPLICA_TARGET_SESSION_ATTRS``). When the
primary fails over, its pooled connections break or turn read-only: either error drops
the whole pool, so the next transaction connects again and finds the promoted standby.

Engines are fork-safe: a child process (a Celery pool process, gunicorn with
``--preload``, ``multiprocessing``) starts every engine made here with an empty pool,
and leaves the connections it inherited to its parent.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from email_worker.config import Settings, database_roles, get_settings
from email_worker.config.database_hosts import url_hosts
from email_worker.config.database_urls import (
    CONNECT_TIMEOUT_SECONDS,
    PING_AFTER_IDLE_SECONDS,
    READ_ONLY_SQL_TRANSACTION,
    DatabaseUrl,
)
from email_worker.db.pooling import max_lifetime, pool_size


@dataclass(frozen=True)
class Engines:
    """The primary engine and the replica engine (the same object without a replica)."""

    primary: Engine
    replica: Engine

    @property
    def has_replica(self) -> bool:
        """Whether reads have a database of their own to go to."""
        return self.replica is not self.primary

    def dispose(self, close: bool = True) -> None:
        """Drop the pooled connections of both engines."""
        self.primary.dispose(close=close)
        if self.has_replica:
            self.replica.dispose(close=close)


def primary_url(settings: Settings) -> URL:
    """The URL of the database that takes the writes (:mod:`email_worker.config.database_roles`)."""
    return to_sqlalchemy(database_roles.primary_url(settings))


def replica_url(settings: Settings) -> URL:
    """The URL of the database that serves reads (the primary's when there is no replica)."""
    return to_sqlalchemy(database_roles.replica_url(settings))


def to_sqlalchemy(url: DatabaseUrl) -> URL:
    """``url`` as SQLAlchemy's URL."""
    return URL.create(
        url.drivername,
        username=url.username,
        password=url.password,
        host=url.host,
        port=url.port,
        database=url.database,
        query=url.query,
    )


def create_engine_for(url: URL, settings: Settings, *, ping_every_checkout: bool = False) -> Engine:
    """An engine for ``url`` with the pool and time-outs the settings ask for.

    Its pooled connections are checked before use when they sat idle, or every time
    with ``ping_every_checkout`` (the replica's, so a replica that went away is noticed
    when a session connects and its reads fall back to the primary).
    """
    engine = _create_engine(url, settings, ping_every_checkout)
    _made.add(engine)
    return engine


def _create_engine(url: URL, settings: Settings, ping_every_checkout: bool) -> Engine:
    if url.get_backend_name() != "postgresql":
        return sa.create_engine(url)
    size, lifetime = pool_size(settings), max_lifetime(settings)
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
    engine = sa.create_engine(
        url,
        # DB_MAX_IDLE_CONNS stay pooled; up to DB_MAX_OPEN_CONNS are open at once.
        pool_size=size,
        max_overflow=settings.db_max_open_conns - size,
        pool_recycle=int(lifetime) if lifetime else -1,
        connect_args=connect_args,
        pool_pre_ping=ping_every_checkout,
    )
    sa.event.listen(engine, "checkin", _note_checkin)
    sa.event.listen(engine, "checkout", _ping_if_idle)
    return engine


def _note_checkin(dbapi_connection: Any, record: Any) -> None:
    record.info["checked_in_at"] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    # A connection used a moment ago is alive; pinging it on every checkout would double
    # the round trips of the send path. One that sat idle (the server may have closed it,
    # or restarted) is checked first, and replaced when dead.
    idle_since = record.info.get("checked_in_at")
    if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
        return
    try:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        dbapi_connection.rollback()  # leave no transaction open: the user may want autocommit
    except Exception as exc:
        raise sa.exc.DisconnectionError(f"pooled connection is dead: {exc}") from exc


def _read_only_is_a_disconnect(context: Any) -> None:
    # The primary answered "read-only": it was demoted, and the other pooled connections
    # point at it too. As for a dropped connection, SQLAlchemy then empties the pool.
    if getattr(context.original_exception, "sqlstate", None) == READ_ONLY_SQL_TRANSACTION:
        context.is_disconnect = True


def hosts_of(engine: Engine) -> list[str]:
    """The ``host:port`` entries an engine may connect to (no user, no password)."""
    url = engine.url
    if url.get_backend_name() != "postgresql":
        return [url.render_as_string(hide_password=True)]
    pairs = url_hosts(url.query, url.host, url.port)
    return [f"{host}:{port}" if port else host for host, port in pairs]


def create_engines(settings: Settings | None = None) -> Engines:
    """New engines for the primary and the replica named by ``settings``."""
    settings = settings or get_settings()
    primary = create_engine_for(primary_url(settings), settings)
    if primary.dialect.name == "postgresql":
        sa.event.listen(primary, "handle_error", _read_only_is_a_disconnect)
    replica_at = replica_url(settings)
    if replica_at == primary.url:
        return Engines(primary=primary, replica=primary)
    replica = create_engine_for(replica_at, settings, ping_every_checkout=True)
    return Engines(primary=primary, replica=replica)


_lock = threading.Lock()
_engines: Engines | None = None
_made: weakref.WeakSet[Engine] = weakref.WeakSet()


def get_engines() -> Engines:
    """The engines of this process, created on first use."""
    global _engines
    with _lock:
        if _engines is None:
            _engines = create_engines()
        return _engines


def dispose_engines(close: bool = True) -> None:
    """Forget this process's engines; the next :func:`get_engines` creates new ones.

    Call it on worker shutdown, and with ``close=False`` in a freshly forked child,
    which must not close the connections it inherited from its parent. The direct
    connections (:mod:`email_worker.db.direct`) are forgotten with them.
    """
    global _engines
    with _lock:
        engines, _engines = _engines, None
    if engines is not None:
        engines.dispose(close=close)
    if "email_worker.db.direct" in sys.modules:  # the connections of the paths without engines
        from email_worker.db import direct

        direct.dispose(close=close)


def _forget_connections_in_child() -> None:
    global _lock
    # A thread of the parent may have held the lock at the moment of the fork.
    _lock = threading.Lock()
    for engine in list(_made):
        # Two processes talking over one socket corrupt each other's results, and
        # closing it here would end the parent's session too: only drop the pool.
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_connections_in_child)
