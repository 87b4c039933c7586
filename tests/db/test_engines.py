"""Which database is the primary and which the replica, and how engines are made."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL
from sqlalchemy.pool import QueuePool

from email_worker.config import Secret, Settings, SettingsError, load_settings
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


# Several hosts for one role: a primary that fails over to its standby.


def hosts_and_attrs(url: URL) -> tuple[list[str], Any]:
    return engines.hosts_of(sa.create_engine(url)), url.query.get("target_session_attrs")


def test_several_master_hosts_make_a_libpq_failover_list_that_asks_for_the_writable_one() -> None:
    settings = Settings(
        db_master_host="pg-a,pg-b:5433",
        db_master_port=5444,
        db_slave_host="pg-b:5433,pg-a",
        db_master_password=Secret("pw"),
    )
    primary, replica = primary_url(settings), replica_url(settings)
    assert hosts_and_attrs(primary) == (["pg-a:5444", "pg-b:5433"], "read-write")
    assert hosts_and_attrs(replica) == (["pg-b:5433", "pg-a:5433"], "prefer-standby")
    assert primary.host is None and primary.password == "pw"
    # psycopg is handed libpq's comma lists.
    _, params = sa.create_engine(primary).dialect.create_connect_args(primary)
    assert (params["host"], params["port"]) == ("pg-a,pg-b", "5444,5433")
    assert params["target_session_attrs"] == "read-write"


def test_one_host_is_connected_as_before_without_target_session_attrs() -> None:
    settings = Settings(db_master_host="db1", db_slave_host="db2:6432")
    assert where(primary_url(settings)) == "db1:5432/booking_system"
    assert where(replica_url(settings)) == "db2:6432/booking_system"
    assert "target_session_attrs" not in primary_url(settings).query
    assert "host" not in replica_url(settings).query


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:pw@pg-a:5432,pg-b:5433/mail",
        "postgresql+psycopg://u:pw@/mail?host=pg-a:5432&host=pg-b:5433",
        "postgresql+psycopg://u:pw@/mail?host=pg-a,pg-b&port=5432,5433",
    ],
)
def test_a_database_url_names_several_hosts_in_libpq_or_sqlalchemy_form(url: str) -> None:
    settings = Settings(
        database_url=Secret(url),
        database_replica_url=Secret(url),
        db_primary_target_session_attrs="primary",
    )
    primary = primary_url(settings)
    assert hosts_and_attrs(primary) == (["pg-a:5432", "pg-b:5433"], "primary")
    assert primary.password == "pw" and primary.database == "mail"
    assert hosts_and_attrs(replica_url(settings))[1] == "prefer-standby"


def test_a_database_url_keeps_its_own_target_session_attrs() -> None:
    settings = Settings(
        database_url=Secret("postgresql://u@pg-a,pg-b/mail?target_session_attrs=any")
    )
    assert hosts_and_attrs(primary_url(settings)) == (["pg-a", "pg-b"], "any")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"db_master_host": "pg-a,,pg-b"}, "DB_MASTER_HOST: empty host in 'pg-a,,pg-b'"),
        ({"db_slave_host": "pg-a:54x2"}, "DB_SLAVE_HOST: 'pg-a:54x2': the port is not a number"),
        ({"db_host": "pg-a:70000"}, "DB_HOST: 'pg-a:70000': the port must be between 1 and 65535"),
        (
            {"database_url": Secret("postgresql://u:secret@/db?host=a,b&port=1,2,3")},
            "DATABASE_URL: 2 hosts but 3 ports: give one port, or one port per host",
        ),
        (
            {
                "database_replica_url": Secret(
                    "postgresql://u:secret@a,b/db?target_session_attrs=rw"
                )
            },
            "DATABASE_REPLICA_URL: unknown target_session_attrs 'rw'; known: any, read-write",
        ),
    ],
)
def test_a_failover_setting_that_cannot_work_is_refused_with_the_reason(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)) as refused:
        Settings(**fields)
    assert "secret" not in str(refused.value)


def test_an_unknown_target_session_attrs_is_refused_when_read() -> None:
    settings = load_settings(environ={"DB_PRIMARY_TARGET_SESSION_ATTRS": "master"})
    with pytest.raises(SettingsError, match="^DB_PRIMARY_TARGET_SESSION_ATTRS: must be one of any"):
        settings.validate()


def test_a_read_only_answer_on_the_primary_drops_the_whole_pool() -> None:
    # A demoted (or fenced) primary answers writes with "read-only transaction": the pooled
    # connections all point at it, so they are all replaced, as after a disconnect.
    settings = Settings(
        database_url=Secret(
            "postgresql://postgres@127.0.0.1:5432/postgres"
            "?options=-c%20default_transaction_read_only%3Don"
        )
    )
    made = create_engines(settings)
    try:
        with made.primary.connect() as first, made.primary.connect() as second:
            pids = {
                c.exec_driver_sql("SELECT pg_backend_pid()").scalar_one() for c in (first, second)
            }
        with made.primary.connect() as connection, pytest.raises(sa.exc.DBAPIError) as refused:
            connection.exec_driver_sql("CREATE TEMPORARY TABLE t (a int)")
        assert refused.value.connection_invalidated
        assert getattr(refused.value.orig, "sqlstate", None) == "25006"
        with made.primary.connect() as connection:
            assert connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one() not in pids
    finally:
        made.dispose()
