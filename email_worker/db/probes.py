"""Probes of a database server for the health and start-up checks: does it answer, is it behind."""

from __future__ import annotations

import dataclasses

from sqlalchemy import Connection, Engine, text


def ping(engine: Engine) -> str | None:
    """Run ``SELECT 1`` on a new connection of ``engine``; raises if the server does not answer.

    Returns the ``host:port`` that answered, for an engine that may connect to one of
    several hosts (``None`` for a database without a server, SQLite).
    """
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
        return server_address(connection)


def server_address(connection: Connection) -> str | None:
    """The ``host:port`` of the PostgreSQL server ``connection`` reached (no user, no password)."""
    info = getattr(connection.connection.dbapi_connection, "info", None)
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
        in_recovery, lag, behind = connection.execute(
            text(
                "SELECT pg_is_in_recovery(),"
                " extract(epoch FROM now() - pg_last_xact_replay_timestamp()),"
                " pg_last_wal_receive_lsn() IS DISTINCT FROM pg_last_wal_replay_lsn()"
            )
        ).one()
    return ReplayState(bool(in_recovery), None if lag is None else float(lag), bool(behind))
