"""Migrations up and down, empty and with rows, on PostgreSQL and on a SQLite file."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import URL

from email_worker.db import migrate
from email_worker.db.models import Base
from tests.db.conftest import admin_url
from tests.pg import scratch_database

TABLES = {"email_jobs", "email_templates", "email_tracking"}
BULK_TABLES = {"email_bulks", "email_bulk_recipients"}
TRACKING_TABLES = {"email_events", "email_suppressions", "api_keys", "api_requests"}
ADDED_COLUMNS = {
    "payload",
    "idempotency_key",
    "last_error",
    "provider",
    "provider_message_id",
    "lease_expires_at",
    "sent_at",
    "claim_token",
}
ADDED_INDEXES = {
    "idx_email_jobs_idempotency_key",
    "idx_email_jobs_recipient_email",
    "idx_email_jobs_waiting",
    "idx_email_jobs_sending_lease",
}

# The original service's schema: (column, type, max length, nullable, default).
ORIGINAL_EMAIL_JOBS = [
    ("id", "uuid", None, "NO", "gen_random_uuid()"),
    ("job_type", "character varying", 50, "NO", None),
    ("recipient_email", "character varying", 255, "NO", None),
    ("subject", "character varying", 500, "YES", None),
    ("template_id", "character varying", 100, "YES", None),
    ("template_data", "jsonb", None, "YES", None),
    ("status", "character varying", 20, "YES", "'pending'::character varying"),
    ("priority", "integer", None, "YES", "0"),
    ("retry_count", "integer", None, "YES", "0"),
    ("max_retries", "integer", None, "YES", "3"),
    ("scheduled_at", "timestamp without time zone", None, "YES", None),
    ("created_at", "timestamp without time zone", None, "YES", "now()"),
    ("updated_at", "timestamp without time zone", None, "YES", "now()"),
]
ORIGINAL_INDEXES = {
    "email_jobs": {
        "email_jobs_pkey",
        "idx_email_jobs_status",
        "idx_email_jobs_scheduled_at",
        "idx_email_jobs_created_at",
    },
    "email_templates": {"email_templates_pkey"},
    "email_tracking": {
        "email_tracking_pkey",
        "idx_email_tracking_job_id",
        "idx_email_tracking_status",
    },
}


URL_FIXTURES = {"postgresql": "postgres_url", "sqlite": "sqlite_url"}


@pytest.fixture
def postgres_url(replica_server: None) -> Iterator[URL]:
    """An empty database of this test's own on the primary."""
    with scratch_database("email_worker_migrations") as scratch:
        yield scratch


@pytest.fixture
def sqlite_url(tmp_path: Path) -> URL:
    """A SQLite file that does not exist yet."""
    return URL.create("sqlite", database=str(tmp_path / "migrations.db"))


def tables(url: URL) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def columns(url: URL, table: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return {column["name"] for column in sa.inspect(engine).get_columns(table)}
    finally:
        engine.dispose()


def indexes(url: URL, table: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return {str(index["name"]) for index in sa.inspect(engine).get_indexes(table)}
    finally:
        engine.dispose()


def schema_differences(url: URL) -> list[object]:
    """What autogenerate would change to make the database match the models."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def fill_like_the_original_service(url: URL) -> tuple[str, str]:
    """Rows written with the 0001 schema only, as the original service wrote them."""
    job_id, tracking_id = uuid.uuid4(), uuid.uuid4()
    engine = sa.create_engine(url)
    postgres = url.get_backend_name() == "postgresql"
    ids = {
        "job": str(job_id) if postgres else job_id.hex,
        "tracking": str(tracking_id) if postgres else tracking_id.hex,
    }
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.text(
                    "INSERT INTO email_jobs (id, job_type, recipient_email, subject, template_data,"
                    " status, created_at, updated_at) VALUES (:job, 'welcome', 'ada@example.com',"
                    " 'Hi', '{\"name\": \"Ada\"}', 'sent', '2024-01-02 03:04:05',"
                    " '2024-01-02 03:04:05')"
                ),
                ids,
            )
            connection.execute(
                sa.text(
                    "INSERT INTO email_tracking (id, job_id, provider, message_id, status, sent_at)"
                    " VALUES (:tracking, :job, 'sendgrid', 'sg-1', 'sent', '2024-01-02 03:04:06')"
                ),
                ids,
            )
            connection.execute(
                sa.text(
                    "INSERT INTO email_templates (id, name, subject, html_template, is_active)"
                    " VALUES ('welcome', 'Welcome', 'Hi {{ name }}', '<p>Hi</p>', true)"
                )
            )
    finally:
        engine.dispose()
    return ids["job"], ids["tracking"]


def row_counts(url: URL) -> dict[str, int]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return {
                t: connection.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
                for t in sorted(TABLES)
            }
    finally:
        engine.dispose()


def test_0001_creates_exactly_the_original_schema_on_postgresql(postgres_url: URL) -> None:
    migrate.upgrade(postgres_url, "0001")
    assert tables(postgres_url) == TABLES
    for table, expected in ORIGINAL_INDEXES.items():
        assert indexes(postgres_url, table) | {f"{table}_pkey"} == expected
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as connection:
            found = connection.execute(
                sa.text(
                    "SELECT column_name, data_type, character_maximum_length, is_nullable,"
                    " column_default FROM information_schema.columns"
                    " WHERE table_name = 'email_jobs' ORDER BY ordinal_position"
                )
            ).all()
            foreign_keys = sa.inspect(connection).get_foreign_keys("email_tracking")
    finally:
        engine.dispose()
    assert [tuple(row) for row in found] == ORIGINAL_EMAIL_JOBS
    assert [(fk["constrained_columns"], fk["referred_table"]) for fk in foreign_keys] == [
        (["job_id"], "email_jobs")
    ]


@pytest.mark.parametrize("engine_name", ["postgresql", "sqlite"])
def test_migrations_go_up_and_down_on_an_empty_database(
    engine_name: str, request: pytest.FixtureRequest
) -> None:
    url: URL = request.getfixturevalue(URL_FIXTURES[engine_name])
    migrate.upgrade(url)
    assert migrate.current(url) == migrate.head() == "0006"
    assert tables(url) == TABLES | BULK_TABLES | TRACKING_TABLES
    assert schema_differences(url) == []
    migrate.downgrade(url, "0001")
    assert columns(url, "email_jobs").isdisjoint(ADDED_COLUMNS)
    migrate.downgrade(url, "base")
    assert migrate.current(url) is None
    assert tables(url) == set()
    migrate.upgrade(url)
    assert migrate.current(url) == "0006"


@pytest.mark.parametrize("engine_name", ["postgresql", "sqlite"])
def test_rows_of_the_original_service_survive_upgrade_and_downgrade(
    engine_name: str, request: pytest.FixtureRequest
) -> None:
    url: URL = request.getfixturevalue(URL_FIXTURES[engine_name])
    migrate.upgrade(url, "0001")
    job_id, tracking_id = fill_like_the_original_service(url)
    before = row_counts(url)

    migrate.upgrade(url)
    assert row_counts(url) == before
    assert columns(url, "email_jobs") >= ADDED_COLUMNS
    assert indexes(url, "email_jobs") >= ADDED_INDEXES
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            job = connection.execute(
                sa.text(
                    "SELECT recipient_email, status, payload, idempotency_key FROM email_jobs"
                    " WHERE id = :id"
                ),
                {"id": job_id},
            ).one()
            tracking_job = connection.execute(
                sa.text("SELECT job_id FROM email_tracking WHERE id = :id"), {"id": tracking_id}
            ).scalar()
    finally:
        engine.dispose()
    assert tuple(job) == ("ada@example.com", "sent", None, None)
    assert str(tracking_job).replace("-", "") == job_id.replace("-", "")

    migrate.downgrade(url, "0001")
    assert row_counts(url) == before
    assert ADDED_INDEXES.isdisjoint(indexes(url, "email_jobs"))
    migrate.downgrade(url, "base")
    assert tables(url) == set()


def test_the_session_database_matches_the_models(database: str) -> None:
    assert schema_differences(admin_url(database=database)) == []
