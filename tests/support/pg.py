"""Helpers for the real PostgreSQL servers the tests use: a primary and a streaming replica."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from email_worker.db import migrate
from tests.support.paths import ROOT
from tests.support.waiting import wait_for

HOST = "127.0.0.1"
PRIMARY_PORT = 5432
REPLICA_PORT = 5433
PG_VERSION = sorted(p.name for p in Path("/etc/postgresql").iterdir())[-1]


def admin_url(port: int = PRIMARY_PORT, database: str = "postgres") -> URL:
    """A URL for the superuser on one of the local servers."""
    return URL.create(
        "postgresql+psycopg", username="postgres", host=HOST, port=port, database=database
    )


def replica_in_recovery() -> bool:
    """Whether the replica answers, as a standby."""
    try:
        with psycopg.connect(
            host=HOST, port=REPLICA_PORT, user="postgres", dbname="postgres", connect_timeout=2
        ) as connection:
            row = connection.execute("SELECT pg_is_in_recovery()").fetchone()
            return bool(row and row[0])
    except psycopg.OperationalError:
        return False


def start_replica() -> None:
    """Run ``.ci/start-replica``; fail the test run loudly if the replica cannot start."""
    result = subprocess.run(
        [str(ROOT / ".ci" / "start-replica")], capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0 or not replica_in_recovery():
        pytest.fail(
            "the PostgreSQL replica on 127.0.0.1:5433 could not be started by "
            f".ci/start-replica (exit {result.returncode}):\n{result.stdout}{result.stderr}",
            pytrace=False,
        )


def create_database(name: str) -> None:
    """Create a database on the primary, migrate it, and wait until the replica has it."""
    admin = sa.create_engine(admin_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    migrate.upgrade(admin_url(database=name))
    wait_for(lambda: replica_has_database(name), f"{name} on the replica", timeout=15.0)


def drop_database(name: str) -> None:
    """Drop a test database, closing whatever connections are still open to it."""
    admin = sa.create_engine(admin_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def replica_has_database(name: str) -> bool:
    """Whether the replica already has ``name`` (physical replication copies it)."""
    try:
        with psycopg.connect(
            host=HOST, port=REPLICA_PORT, user="postgres", dbname=name, connect_timeout=2
        ):
            return True
    except psycopg.OperationalError:
        return False


def wait_for_replay(database: str) -> None:
    """Wait until the replica has replayed everything the primary has committed so far."""
    primary = sa.create_engine(admin_url(database=database))
    replica = sa.create_engine(admin_url(port=REPLICA_PORT, database=database))
    try:
        with primary.connect() as connection:
            lsn = connection.exec_driver_sql("SELECT pg_current_wal_lsn()").scalar_one()
        query = sa.text("SELECT pg_last_wal_replay_lsn() >= CAST(:lsn AS pg_lsn)")

        def replayed() -> bool:
            try:
                with replica.connect() as connection:
                    return bool(connection.execute(query, {"lsn": lsn}).scalar_one())
            except sa.exc.OperationalError:
                return False  # a replica restarted by an earlier test is still recovering

        wait_for(replayed, "the replica to replay the primary's WAL", timeout=15.0)
    finally:
        primary.dispose()
        replica.dispose()


@contextmanager
def scratch_database(prefix: str) -> Iterator[URL]:
    """An empty database of its own on the primary, dropped afterwards."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = sa.create_engine(admin_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url(database=name)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def refuse_connections(name: str) -> None:
    """Make the primary refuse ``name``: no new connections, and the open ones are closed."""
    admin = sa.create_engine(admin_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        connection.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :name AND pid <> pg_backend_pid()"
            ),
            {"name": name},
        )
    admin.dispose()


def accept_connections(name: str) -> None:
    """Undo :func:`refuse_connections`."""
    admin = sa.create_engine(admin_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
    admin.dispose()
