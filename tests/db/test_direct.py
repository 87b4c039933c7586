"""The direct PostgreSQL connections: roles, transactions, a lost replica, lost and forked ones."""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from collections.abc import Callable
from multiprocessing.queues import Queue
from typing import Any

import psycopg
import pytest

from email_worker.db import direct
from email_worker.db.pooling import process_replica_health
from tests.db.conftest import REPLICA_PASSWORD, url
from tests.support.pg import HOST, PRIMARY_PORT, REPLICA_PORT
from tests.support.tcp_proxy import TcpProxy

SERVER = "SELECT pg_is_in_recovery(), inet_server_port(), pg_backend_pid()"


def server(role: Callable[..., Any]) -> tuple[bool, int, int]:
    """Whether the server of a role is a standby, its port, and the session's backend."""
    with role() as connection:
        standby, port, pid = connection.execute(SERVER).fetchone()
    return bool(standby), int(port), int(pid)


def admin() -> psycopg.Connection[Any]:
    return psycopg.connect(host=HOST, port=PRIMARY_PORT, user="postgres", autocommit=True)


def test_writes_go_to_the_primary_and_reads_to_the_replica(point_at: Callable[..., None]) -> None:
    assert direct.applies()
    assert server(direct.primary)[:2] == (False, PRIMARY_PORT)
    assert server(direct.replica)[:2] == (True, REPLICA_PORT)


def test_without_a_replica_reads_go_to_the_primary(
    point_at: Callable[..., None], database: str
) -> None:
    point_at(url(database, PRIMARY_PORT))
    assert server(direct.replica)[:2] == (False, PRIMARY_PORT)


def test_a_block_commits_when_it_succeeds_and_rolls_back_when_it_fails(
    point_at: Callable[..., None],
) -> None:
    with direct.primary() as connection:
        connection.execute("CREATE TABLE IF NOT EXISTS direct_test (n int)")
        connection.execute("TRUNCATE direct_test")
    with pytest.raises(RuntimeError), direct.primary() as connection:
        connection.execute("INSERT INTO direct_test VALUES (1)")
        raise RuntimeError("the caller failed")
    with direct.primary() as connection:
        connection.execute("INSERT INTO direct_test VALUES (2)")
    # Without a transaction each statement commits, even when a later one fails.
    with pytest.raises(psycopg.errors.UniqueViolation), direct.primary(transaction=False) as c:
        c.execute("INSERT INTO direct_test VALUES (3)")
        c.execute("CREATE UNIQUE INDEX direct_test_n ON direct_test (n)")
        c.execute("INSERT INTO direct_test VALUES (3)")
    with direct.primary() as connection:
        rows = connection.execute("SELECT n FROM direct_test ORDER BY n").fetchall()
        connection.execute("DROP TABLE direct_test")
    assert rows == [(2,), (3,)]
    # The connection that saw the error went back to the pool, usable.
    assert server(direct.primary)[:2] == (False, PRIMARY_PORT)


def test_reads_fall_back_to_the_primary_while_the_replica_cannot_be_reached(
    point_at: Callable[..., None],
    database: str,
    replica_link: TcpProxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="email_worker.db.session")
    replica_at = url(database, replica_link.port, password=REPLICA_PASSWORD)
    point_at(url(database, PRIMARY_PORT), replica_at)
    assert server(direct.replica)[0] is True  # a pooled connection through the link
    health = process_replica_health()
    fallbacks = health.replica_fallbacks

    replica_link.close()  # the replica goes away, and its connections with it
    assert server(direct.replica)[:2] == (False, PRIMARY_PORT)
    assert server(direct.replica)[:2] == (False, PRIMARY_PORT)  # not tried again meanwhile
    assert health.replica_fallbacks == fallbacks + 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert f"replica {HOST}:{replica_link.port} unreachable" in warnings[0]
    assert REPLICA_PASSWORD not in caplog.text

    replica_link.open()
    # Tried again after DB_REPLICA_RETRY_INTERVAL (1 s in the tests).
    deadline = health.retry_interval + 5
    started = time.monotonic()
    while server(direct.replica)[0] is not True:
        assert time.monotonic() - started < deadline, "reads never went back to the replica"
        time.sleep(0.2)
    assert "reachable again" in caplog.text


def test_a_connection_the_server_terminated_is_replaced_before_the_next_use(
    point_at: Callable[..., None],
) -> None:
    _, _, pid = server(direct.primary)
    with admin() as connection:
        connection.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))  # and its end
    _, _, again = server(direct.primary)
    assert again != pid


def test_a_connection_lost_in_use_drops_the_pool_and_the_next_use_reconnects(
    point_at: Callable[..., None],
) -> None:
    _, _, first = server(direct.primary)
    with pytest.raises(direct.DatabaseUnreachable) as lost, direct.primary() as connection:
        assert connection.execute("SELECT pg_backend_pid()").fetchone() == (first,)
        with admin() as other:
            other.execute("SELECT pg_terminate_backend(%s)", (first,))
        connection.execute("SELECT 1")
    assert lost.value.connection_dropped
    assert server(direct.primary)[2] != first


def test_a_read_only_primary_drops_the_pool(point_at: Callable[..., None], database: str) -> None:
    # The primary's URL names a standby: a demoted primary answers writes so.
    point_at(url(database, REPLICA_PORT), url(database, REPLICA_PORT))
    _, _, first = server(direct.primary)
    with pytest.raises(direct.DatabaseUnreachable) as refused, direct.primary() as connection:
        connection.execute("CREATE TABLE direct_read_only (n int)")
    assert refused.value.connection_dropped
    assert isinstance(refused.value.__cause__, psycopg.errors.ReadOnlySqlTransaction)
    assert server(direct.primary)[2] != first


def test_a_database_that_cannot_be_reached_is_one_error_naming_the_host(
    point_at: Callable[..., None], database: str
) -> None:
    closed = TcpProxy(target=PRIMARY_PORT)  # a port nothing listens on
    point_at(url(database, closed.port, password="primary-password-never-shown"))
    with pytest.raises(direct.DatabaseUnreachable) as unreachable, direct.primary():
        pass
    assert not unreachable.value.connection_dropped
    assert f"{HOST}:{closed.port}" in str(unreachable.value)
    assert "primary-password-never-shown" not in str(unreachable.value)


def test_several_hosts_find_the_primary_and_prefer_the_standby(
    point_at: Callable[..., None], database: str
) -> None:
    # The standby first: read-write skips it for the primary; reads prefer it.
    both = f"{HOST}:{REPLICA_PORT},{HOST}:{PRIMARY_PORT}"
    reversed_ = f"{HOST}:{PRIMARY_PORT},{HOST}:{REPLICA_PORT}"
    point_at(
        f"postgresql://postgres@{both}/{database}", f"postgresql://postgres@{reversed_}/{database}"
    )
    assert server(direct.primary)[:2] == (False, PRIMARY_PORT)
    assert server(direct.replica)[:2] == (True, REPLICA_PORT)


def test_threads_share_the_pool_within_its_limits(
    point_at: Callable[..., None], database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    named = f"{url(database)}?application_name=direct-pool-test"
    point_at(named, DB_MAX_OPEN_CONNS="3", DB_MAX_IDLE_CONNS="2")
    failures: list[BaseException] = []

    def use() -> None:
        try:
            for _ in range(15):
                with direct.primary() as connection:
                    connection.execute("SELECT pg_sleep(0.002)")
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=use) for _ in range(8)]
    for thread in threads:
        thread.start()
    with admin() as watcher:
        most = 0
        while any(thread.is_alive() for thread in threads):
            (open_now,) = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                ("direct-pool-test",),
            ).fetchone()
            most = max(most, open_now)
        for thread in threads:
            thread.join()
        (kept,) = watcher.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            ("direct-pool-test",),
        ).fetchone()
    assert failures == []
    assert most <= 3
    assert kept <= 2  # DB_MAX_IDLE_CONNS stay pooled

    # With every connection in use, the next use waits, then says so.
    monkeypatch.setattr(direct, "POOL_TIMEOUT_SECONDS", 0.3)
    with (
        direct.primary(),
        direct.primary(),
        direct.primary(),
        pytest.raises(direct.PoolExhausted, match="stayed in use"),
        direct.primary(),
    ):
        pass


def child_backends(results: Queue[Any]) -> None:
    try:
        results.put([server(direct.primary)[2] for _ in range(2)])
    except Exception as exc:  # reported to the parent, which fails the test
        results.put(repr(exc))


def test_a_forked_child_connects_on_its_own_and_the_parent_keeps_its_connection(
    point_at: Callable[..., None],
) -> None:
    parent = server(direct.primary)[2]  # the connection now waits in the pool
    fork = multiprocessing.get_context("fork")
    results: Queue[Any] = fork.Queue()
    child = fork.Process(target=child_backends, args=(results,))
    child.start()
    child.join(timeout=30)
    assert child.exitcode == 0
    in_child = results.get(timeout=5)
    assert isinstance(in_child, list), in_child
    assert parent not in in_child
    assert in_child[0] == in_child[1]  # the child pools its own connection
    # The parent's pooled connection was neither used nor closed by the child.
    assert server(direct.primary)[2] == parent


def test_other_databases_keep_the_sqlalchemy_path(
    point_at: Callable[..., None], tmp_path: Any
) -> None:
    point_at(f"sqlite:///{tmp_path / 'jobs.db'}")
    assert not direct.applies()
