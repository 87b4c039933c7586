"""Real PostgreSQL for the database tests: a primary and a streaming replica.

The replica (127.0.0.1:5433) is started with ``.ci/start-replica`` when it does not
answer. Each test session gets a database of its own on the primary, migrated to the
newest revision; physical replication copies it to the replica. It is dropped at the
end.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from email_worker.config import Secret, Settings, reset_settings
from email_worker.db import direct, migrate
from email_worker.db.engines import Engines, create_engine_for, create_engines, dispose_engines
from email_worker.db.session import ReplicaHealth, RoutingSession
from tests.support.pg import (
    HOST,
    PRIMARY_PORT,
    REPLICA_PORT,
    create_database,
    drop_database,
    replica_in_recovery,
    start_replica,
    wait_for_replay,
)
from tests.support.tcp_proxy import TcpProxy

# Trust authentication ignores it; it is here to prove it never reaches a log line.
REPLICA_PASSWORD = "replica-password-never-logged"


@pytest.fixture(scope="session")
def replica_server() -> None:
    """A running streaming replica."""
    if not replica_in_recovery():
        start_replica()


@pytest.fixture(scope="session")
def database(replica_server: None) -> Iterator[str]:
    """A fresh database on the primary, migrated to head and visible on the replica."""
    name = f"email_worker_test_{secrets.token_hex(4)}"
    create_database(name)
    try:
        yield name
    finally:
        drop_database(name)


def settings_for(database: str, replica_port: int = REPLICA_PORT) -> Settings:
    """Settings naming ``database`` on the primary and on the replica (at ``replica_port``)."""
    return Settings(
        db_master_host=HOST,
        db_master_port=PRIMARY_PORT,
        db_master_name=database,
        db_slave_host=HOST,
        db_slave_port=replica_port,
        db_slave_name=database,
        db_slave_password=Secret(REPLICA_PASSWORD),
    )


def url(database: str, port: int = PRIMARY_PORT, password: str = "") -> str:
    """A SQLAlchemy URL of ``database`` on one of the local servers."""
    secret = f":{password}" if password else ""
    return f"postgresql+psycopg://postgres{secret}@{HOST}:{port}/{database}"


@pytest.fixture
def point_at(database: str) -> Iterator[Callable[..., None]]:
    """Names the databases of both roles in this process's settings, as a producer's own
    do: ``point_at(primary_url, replica_url, DB_MAX_OPEN_CONNS="2")``; the test database
    until a test calls it.
    The direct connections (:mod:`email_worker.db.direct`) follow them."""
    with pytest.MonkeyPatch.context() as patch:

        def point(primary: str, replica: str = "", **settings: str) -> None:
            patch.setenv("DATABASE_URL", primary)
            patch.setenv("DATABASE_REPLICA_URL", replica)
            for name, value in settings.items():
                patch.setenv(name, value)
            reset_settings()
            direct.dispose()

        point(url(database), url(database, REPLICA_PORT))
        yield point
        direct.dispose()
    reset_settings()


@pytest.fixture(scope="session")
def settings(database: str) -> Settings:
    """Settings naming the test database on the primary and on the replica."""
    return settings_for(database)


@pytest.fixture(scope="session")
def engines(settings: Settings) -> Iterator[Engines]:
    """The service's engines for the test database."""
    made = create_engines(settings)
    assert made.has_replica
    yield made
    made.dispose()


@pytest.fixture
def replica_link(database: str) -> Iterator[TcpProxy]:
    """A link to the replica that the test can cut (every connection reset, new ones refused)
    and restore, without stopping the replica every other test reads from."""
    link = TcpProxy(target=REPLICA_PORT).open()
    yield link
    link.close()


@pytest.fixture
def engines_through_link(
    engines: Engines, database: str, replica_link: TcpProxy
) -> Iterator[Engines]:
    """The service's engines for the test database, reaching the replica through the link."""
    made = create_engines(settings_for(database, replica_port=replica_link.port))
    yield made
    made.dispose()


@pytest.fixture
def db(engines: Engines) -> Engines:
    """The engines, with every table emptied first."""
    with engines.primary.begin() as connection:
        connection.exec_driver_sql(
            "TRUNCATE email_tracking, email_jobs, email_templates,"
            " email_bulk_recipients, email_bulks, email_events, email_suppressions,"
            " api_requests, api_keys"
        )
    return engines


@pytest.fixture
def health() -> ReplicaHealth:
    """Replica health of this test alone, retrying a lost replica after one second."""
    return ReplicaHealth(retry_interval=1.0)


@pytest.fixture
def session_engines(request: pytest.FixtureRequest, db: Engines) -> Engines:
    """The engines ``new_session`` and ``statements`` use: ``db``, or, for a test that asks
    for ``engines_through_link``, those."""
    if "engines_through_link" in request.fixturenames:
        engines: Engines = request.getfixturevalue("engines_through_link")
        return engines
    return db


@pytest.fixture
def new_session(
    session_engines: Engines, health: ReplicaHealth
) -> Iterator[Callable[..., RoutingSession]]:
    """Opens routing sessions on the test database; closes them after the test."""
    db = session_engines
    opened: list[RoutingSession] = []

    def open_session(*, primary: bool = False) -> RoutingSession:
        session = RoutingSession(engines=db, health=health, primary=primary)
        opened.append(session)
        return session

    yield open_session
    for session in opened:
        session.close()


@pytest.fixture(params=["postgresql", "sqlite"])
def session(request: pytest.FixtureRequest) -> Iterator[RoutingSession]:
    """A send-path session on PostgreSQL (every table emptied), and one on a SQLite file."""
    if request.param == "postgresql":
        new_session: Callable[..., RoutingSession] = request.getfixturevalue("new_session")
        yield new_session(primary=True)
        return
    engines: Engines = request.getfixturevalue("sqlite_engines")
    with RoutingSession(engines=engines, health=ReplicaHealth()) as sqlite_session:
        yield sqlite_session


@dataclass
class Statements:
    """The SQL each server ran, recorded from the engines' own events."""

    engines: Engines
    ran: list[tuple[str, str]] = field(default_factory=list)

    def record(self, conn: sa.Connection, cursor: Any, statement: str, *args: Any) -> None:
        server = "primary" if conn.engine is self.engines.primary else "replica"
        self.ran.append((server, " ".join(statement.split())))

    def servers(self, prefix: str = "") -> list[str]:
        """Which server ran each statement that starts with ``prefix``."""
        return [server for server, sql in self.ran if sql.upper().startswith(prefix.upper())]

    def clear(self) -> None:
        """Forget what was recorded so far."""
        self.ran.clear()


@pytest.fixture
def statements(session_engines: Engines) -> Iterator[Statements]:
    """Records which server runs each statement during the test (on the engines
    ``new_session`` uses)."""
    db = session_engines
    recorder = Statements(db)
    for engine in (db.primary, db.replica):
        sa.event.listen(engine, "before_cursor_execute", recorder.record)
    yield recorder
    for engine in (db.primary, db.replica):
        sa.event.remove(engine, "before_cursor_execute", recorder.record)


@pytest.fixture
def wait_for_replica(db: Engines, database: str) -> Callable[[], None]:
    """Waits until the replica has replayed everything the primary has committed."""
    return lambda: wait_for_replay(database)


@pytest.fixture
def sqlite_engines(tmp_path: Path) -> Iterator[Engines]:
    """A migrated SQLite file serving as both primary and replica."""
    url = URL.create("sqlite", database=str(tmp_path / "email-worker.db"))
    migrate.upgrade(url)
    engine = create_engine_for(url, Settings())
    yield Engines(primary=engine, replica=engine)
    engine.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def postgresql_or_sqlite(
    request: pytest.FixtureRequest, point_at: Callable[..., None], db: Engines, tmp_path: Path
) -> str:
    """This process's database: PostgreSQL (through psycopg alone) or SQLite (the engines)."""
    if request.param == "sqlite":
        sqlite_url = f"sqlite:///{tmp_path / 'jobs.db'}"
        migrate.upgrade(sqlite_url)
        point_at(sqlite_url)
    dispose_engines()
    request.addfinalizer(dispose_engines)
    assert direct.applies() is (request.param == "postgresql")
    return str(request.param)
