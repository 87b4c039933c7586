"""Probes of a database server for the health and start-up checks: does it answer, is it behind.

A worker's ``/health`` on PostgreSQL probes through psycopg alone (:func:`databases`
gives each role's URL): its main process, which sends nothing, never imports SQLAlchemy.
Another database (SQLite, in the quick start) is probed through its engine.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from email_worker.config.database_roles import primary_url, replica_url
from email_worker.config.database_urls import (
    DatabaseUrl,
    psycopg_connect_kwargs,
)

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

    from email_worker.config import Settings
    from email_worker.db.engines import Engines


@dataclasses.dataclass(frozen=True)
class Databases:
    """The PostgreSQL databases of both roles, probed without SQLAlchemy (as engines are)."""

    primary: DatabaseUrl
    replica: DatabaseUrl

    @property
    def has_replica(self) -> bool:
        """Whether reads have a database of their own to go to."""
        return self.replica != self.primary


def databases(settings: Settings) -> Databases | Engines:
    """What ``/health`` probes: each role's URL on PostgreSQL, else the engines."""
    from email_worker.db import direct

    if direct.applies(settings):
        return Databases(primary_url(settings), replica_url(settings))
    from email_worker.db.engines import get_engines

    return get_engines()


def ping(database: DatabaseUrl | Engine) -> str | None:
    """Run ``SELECT 1`` on a connection to ``database``; raises if the server does not answer.

    A PostgreSQL URL gets a new psycopg connection of its own, an engine one of its pool.
    Returns the ``host:port`` that answered, for a database that may be one of several
    hosts (``None`` for a database without a server, SQLite).
    """
    if isinstance(database, DatabaseUrl):
        import psycopg

        with psycopg.connect(**psycopg_connect_kwargs(database), autocommit=True) as connection:
            connection.execute("SELECT 1")
            return _address(connection.info)
    with database.connect() as connection:
        connection.exec_driver_sql("SELECT 1")
        return server_address(connection)


def server_address(connection: Connection) -> str | None:
    """The ``host:port`` of the PostgreSQL server ``connection`` reached (no user, no password)."""
    return _address(getattr(connection.connection.dbapi_connection, "info", None))


def _address(info: Any) -> str | None:
    host = getattr(info, "host", None)
    if not host:
        return None
    port = getattr(info, "port", None)
    return f"{host}:{port}" if port else str(host)


@dataclasses.dataclass(frozen=True)
class ReplayState:
    """Where a PostgreSQL replica stands: in recovery, seconds since its last replayed change."""

    in_recovery: bool
    lag_seconds: float | None
    behind: bool  # it has received changes it has not replayed yet


def replay_state(engine: Engine) -> ReplayState:
    """The replay state of the PostgreSQL server behind ``engine``."""
    with engine.connect() as connection:
        in_recovery, lag, behind = connection.exec_driver_sql(
            "SELECT pg_is_in_recovery(),"
            " extract(epoch FROM now() - pg_last_xact_replay_timestamp()),"
            " pg_last_wal_receive_lsn() IS DISTINCT FROM pg_last_wal_replay_lsn()"
        ).one()
    return ReplayState(bool(in_recovery), None if lag is None else float(lag), bool(behind))
