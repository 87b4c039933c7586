"""Shared test set-up: real Redis, a real SMTP server, real Celery workers.

The environment is set before email_worker is imported, because settings are
read once per process, as in production.
"""

from __future__ import annotations

import compileall
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis

from tests.support.ports import free_port
from tests.support.smtp_server import SmtpServer

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

pytest_plugins = ["tests.support.server_lock", "tests.support.ordering"]


def pytest_configure(config: pytest.Config) -> None:
    """Compile the package once, as an install does, before any process of a test starts.

    Where ``PYTHONDONTWRITEBYTECODE`` is set, no process writes ``.pyc`` files, and every
    worker, beat and command a test starts would compile each module it imports again.
    """
    if not hasattr(config, "workerinput"):  # the controller, before the test processes
        compileall.compile_dir(Path(__file__).parent.parent / "email_worker", quiet=1)


RUN_ID = uuid.uuid4().hex[:8]
SMTP_PORT = free_port()
DATABASE = f"email_worker_test_{RUN_ID}"
TEST_ENV = {
    "DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{DATABASE}",
    "DATABASE_REPLICA_URL": f"postgresql+psycopg://postgres@127.0.0.1:5433/{DATABASE}",
    "DB_REPLICA_RETRY_INTERVAL": "1",
    "QUEUE_NAME": f"test-email-jobs-{RUN_ID}",
    "REDIS_HOST": "127.0.0.1",
    "REDIS_PORT": "6379",
    "EMAIL_PROVIDER": "smtp",
    "SMTP_HOST": "127.0.0.1",
    "SMTP_PORT": str(SMTP_PORT),
    "SMTP_USE_TLS": "false",
    "SMTP_TIMEOUT": "5",
    # Worker processes of the tests serve /health only where a test asks for a port.
    "SERVER_PORT": "0",
    "RETRY_DELAY": "0.2",
    "RETRY_BACKOFF_MAX": "1",
    "EMAIL_FROM": "noreply@mail.example.com",
    "EMAIL_FROM_NAME": "Example Bookings",
    "OUTBOX_DIR": str(Path(tempfile.gettempdir()) / f"email-worker-outbox-{RUN_ID}"),
    "LOG_FORMAT": "text",
    # Short times so scheduling, relays and template caching show within a test.
    "SCHEDULE_THRESHOLD": "2",
    "DISPATCH_INTERVAL": "0.3",
    "STRANDED_AFTER": "1",
    "TEMPLATE_CACHE_TTL": "0.5",
    # Each send asks the database, so a suppression made by a test applies at once.
    "SUPPRESSION_REFRESH": "0",
    # `email-worker check` asks DNS only where a test serves the records (test_dns_checks).
    "DNS_CHECKS": "false",
    # What marketing email needs in live mode (one-click unsubscribe, a postal address);
    # opens and clicks are tracked only where a test turns it on.
    "TRACKING_SECRET": "test-tracking-key",
    # Personal data at rest (required in live mode): keys of the tests' own.
    "ENCRYPTION_KEYS": "dGVzdC1zZWFsaW5nLWtleS0wMDAwMDAwMDAwMDAwMDA=",
    "ENCRYPTION_LOOKUP_KEY": "test-lookup-key-of-at-least-32-characters",
    "PUBLIC_URL": "https://t.example.com",
    "TRACK_OPENS_CLICKS": "false",
    "SENDER_POSTAL_ADDRESS": "Example Bookings, 1 Quay Street, Example City",
    # The console signs its sessions with it (required in live mode).
    "CONSOLE_SESSION_KEY": "test-console-session-key-of-32-characters",
}
for _name in ("BROKER_URL", "RESULT_BACKEND", "CONFIG_FILE", "TEMPLATES_DIR"):
    os.environ.pop(_name, None)
os.environ.update(TEST_ENV)


@pytest.fixture(scope="session", autouse=True)
def test_database() -> Iterator[str]:
    """The database every test process uses: migrated on the primary, seen on the replica."""
    from tests.support.pg import create_database, drop_database, replica_in_recovery, start_replica

    if not replica_in_recovery():
        start_replica()
    create_database(DATABASE)
    yield DATABASE
    from email_worker.db.engines import dispose_engines

    dispose_engines()
    drop_database(DATABASE)


@pytest.fixture(autouse=True)
def forget_suppressions(test_database: str) -> Iterator[None]:
    """A suppressed address would silently skip later tests' emails to it: none outlives a test."""
    import psycopg

    yield
    # A connection of its own each time: fault tests stop and start PostgreSQL.
    with psycopg.connect(
        f"host=127.0.0.1 user=postgres dbname={test_database}", autocommit=True, connect_timeout=5
    ) as connection:
        connection.execute("DELETE FROM email_suppressions")


@pytest.fixture
def clean_tables(test_database: str) -> None:
    """Empty the job and template tables before a test."""
    import psycopg
    import sqlalchemy as sa

    from tests.support.pg import admin_url

    engine = sa.create_engine(admin_url(database=test_database))
    # The module's worker may still be writing what the last test left it (a provider event
    # being applied): PostgreSQL then ends one side as a deadlock, and the empty-out is tried
    # again.
    for attempt in range(5):
        try:
            with engine.begin() as connection:
                connection.exec_driver_sql(
                    "TRUNCATE email_tracking, email_jobs, email_templates,"
                    " email_bulk_recipients, email_bulks, email_events, email_suppressions,"
                    " api_requests, api_keys, console_users"
                )
            break
        except sa.exc.OperationalError as exc:
            if not isinstance(exc.orig, psycopg.errors.DeadlockDetected) or attempt == 4:
                raise
    engine.dispose()


@pytest.fixture(scope="session")
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis(host="127.0.0.1", port=6379)
    client.ping()
    yield client
    for key in client.scan_iter(f"*{TEST_ENV['QUEUE_NAME']}*"):
        client.delete(key)


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer(port=SMTP_PORT).start()
    yield server
    server.stop()


@pytest.fixture
def smtp(smtp_server: SmtpServer) -> SmtpServer:
    """The SMTP server with nothing received and no replies programmed."""
    smtp_server.reset()
    return smtp_server


@pytest.fixture(scope="session")
def celery_app():  # type: ignore[no-untyped-def]
    import email_worker.tasks  # noqa: F401  registers the tasks
    from email_worker.celeryapp.app import app

    return app


@pytest.fixture(scope="module")
def worker(celery_app, smtp_server, redis_client):  # type: ignore[no-untyped-def]
    """A real Celery worker in this process, consuming every email queue from Redis."""
    import celery.contrib.testing.tasks  # noqa: F401  registers celery.ping for the ping check
    from celery.contrib.testing.worker import start_worker

    purge_queues(redis_client)
    celery_app.tasks["celery.ping"].ignore_result = False  # results are off unless asked for
    with start_worker(
        celery_app,
        pool="threads",
        concurrency=2,
        perform_ping_check=True,
        shutdown_timeout=30,
        loglevel="WARNING",
    ) as controller:
        yield controller


def queue_key(priority: str) -> str:
    return f"{TEST_ENV['QUEUE_NAME']}.{priority}"


def queue_length(client: redis.Redis, priority: str) -> int:
    """Messages waiting in one priority queue (kombu keeps one list per message priority)."""
    base = queue_key(priority)
    return sum(
        int(client.llen(key))
        for key in client.keys(f"{base}*")
        if key.decode().split("\x06\x16")[0] == base
    )


def purge_queues(client: redis.Redis) -> None:
    for priority in ("periodic", "high", "default", "low"):
        for key in client.keys(f"{queue_key(priority)}*"):
            client.delete(key)


@pytest.fixture
def client(clean_tables: None, redis_client: redis.Redis) -> Iterator[TestClient]:
    """The web app in process, on empty tables and queues (a test module may have its own)."""
    from fastapi.testclient import TestClient

    from tests.support.web import web_app

    purge_queues(redis_client)
    with TestClient(web_app()) as client:
        yield client
    purge_queues(redis_client)
