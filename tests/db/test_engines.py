"""Which database is the primary and which the replica, and how engines are made."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL
from sqlalchemy.pool import QueuePool

from email_worker.config import Secret, Settings
from email_worker.db import engines
from email_worker.db.engines import (
    PING_AFTER_IDLE_SECONDS,
    create_engine_for,
    create_engines,
    primary_url,
    replica_url,
)
from tests.support.pg import admin_url


def where(url: URL) -> str:
    port = f":{url.port}" if url.port else ""
    return f"{url.host}{port}/{url.database}"


def test_by_default_the_primary_and_replica_are_the_master_and_slave_settings() -> None:
    settings = Settings()
    assert where(primary_url(settings)) == "localhost:5432/booking_system"
    assert where(replica_url(settings)) == "localhost:5433/booking_system"
    assert primary_url(settings).drivername == "postgresql+psycopg"


def test_master_and_slave_settings_name_each_database() -> None:
    settings = Settings(
        db_master_host="db1",
        db_master_name="mail",
        db_slave_host="db2",
        db_slave_port=6432,
        db_slave_name="mail",
        db_ssl_mode="require",
        db_master_password=Secret("pw1"),
        db_slave_password=Secret("pw2"),
    )
    primary, replica = primary_url(settings), replica_url(settings)
    assert where(primary) == "db1:5432/mail" and where(replica) == "db2:6432/mail"
    assert primary.password == "pw1" and replica.password == "pw2"
    assert primary.query["sslmode"] == replica.query["sslmode"] == "require"
    assert "pw1" not in repr(primary) and "pw1" not in str(primary)


def test_the_legacy_db_settings_name_one_database_for_both() -> None:
    settings = Settings(
        db_host="legacy-db",
        db_port=5544,
        db_name="emails",
        db_user="mailer",
        db_password=Secret("pw"),
    )
    assert where(primary_url(settings)) == "legacy-db:5544/emails"
    assert replica_url(settings) == primary_url(settings)
    assert primary_url(settings).username == "mailer"


def test_any_master_or_slave_setting_wins_over_the_legacy_ones() -> None:
    settings = Settings(db_host="legacy-db", db_master_host="db1", db_slave_host="db2")
    assert where(primary_url(settings)) == "db1:5432/booking_system"
    assert where(replica_url(settings)) == "db2:5433/booking_system"


def test_database_urls_win_and_a_lone_database_url_means_one_database() -> None:
    one = Settings(database_url=Secret("postgres://u:pw@db9/mail"))
    assert primary_url(one).drivername == "postgresql+psycopg"
    assert where(primary_url(one)) == "db9/mail"
    assert primary_url(one).query["sslmode"] == "disable"
    assert replica_url(one) == primary_url(one)

    two = Settings(
        database_url=Secret("postgresql://db9/mail?sslmode=require"),
        database_replica_url=Secret("postgresql://db10/mail"),
    )
    assert primary_url(two).query["sslmode"] == "require"
    assert where(replica_url(two)) == "db10/mail"

    with_slave = Settings(database_url=Secret("postgresql://db9/mail"), db_slave_host="db10")
    assert where(replica_url(with_slave)) == "db10:5433/booking_system"


def test_the_pool_and_connections_follow_the_settings() -> None:
    settings = Settings(
        db_master_host="127.0.0.1",
        db_master_name="postgres",
        db_max_open_conns=10,
        db_max_idle_conns=4,
        db_conn_max_lifetime=120,
    )
    engine = create_engine_for(primary_url(settings), settings)
    connected_with: dict[str, Any] = {}
    event.listen(
        engine, "do_connect", lambda dialect, record, args, params: connected_with.update(params)
    )
    try:
        pool = engine.pool
        assert isinstance(pool, QueuePool)
        assert (pool.size(), pool._max_overflow, pool._recycle) == (4, 6, 120)
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT 1").scalar_one() == 1
        assert connected_with["connect_timeout"] == 3
        assert connected_with["sslmode"] == "disable"
    finally:
        engine.dispose()


def test_a_pooled_connection_the_server_closed_while_idle_is_replaced() -> None:
    settings = Settings(db_master_host="127.0.0.1", db_master_name="postgres")
    engine = create_engine_for(primary_url(settings), settings)
    try:
        with engine.connect() as connection:
            first = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        with engine.connect() as connection:  # used a moment ago: taken as it is
            assert connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one() == first
        admin = sa.create_engine(admin_url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.exec_driver_sql(f"SELECT pg_terminate_backend({first})")
        admin.dispose()
        time.sleep(PING_AFTER_IDLE_SECONDS + 0.2)
        with engine.connect() as connection:  # idle, so checked: a new one replaces it
            connection = connection.execution_options(isolation_level="AUTOCOMMIT")
            assert connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one() != first
        time.sleep(PING_AFTER_IDLE_SECONDS + 0.2)
        with engine.connect() as connection:  # checked, and no transaction left open
            connection = connection.execution_options(isolation_level="AUTOCOMMIT")
            assert connection.exec_driver_sql("SELECT 1").scalar_one() == 1
    finally:
        engine.dispose()


def test_a_single_database_gets_a_single_engine() -> None:
    made = create_engines(Settings(database_url=Secret("sqlite:///:memory:")))
    assert not made.has_replica and made.replica is made.primary
    made.dispose()


def test_the_process_engines_are_made_once_until_disposed() -> None:
    engines.dispose_engines()
    first = engines.get_engines()
    assert engines.get_engines() is first
    engines.dispose_engines()
    assert engines.get_engines() is not first
    engines.dispose_engines()
