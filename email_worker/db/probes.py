"""Probes of a database server for the health and start-up checks: does it answer, is it behind."""

from __future__ import annotations

import dataclasses

from sqlalchemy import Engine, text


def ping(engine: Engine) -> None:
    """Run ``SELECT 1`` on a new connection of ``engine``; raises if the server does not answer."""
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


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
