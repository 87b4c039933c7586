"""Migrations up and down, empty and with rows, on PostgreSQL and on a SQLite file."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import URL

from email_worker.db import migrate
from email_worker.db.models import Base
from email_worker.db.sealing import keys, lookup_hash, open_text
from tests.support.pg import admin_url, scratch_database

TABLES = {"email_jobs", "email_templates", "email_tracking"}
BULK_TABLES = {"email_bulks", "email_bulk_recipients"}
TRACKING_TABLES = {"email_events", "email_suppressions", "api_keys", "api_requests"}
AUDIT_TABLES = {"audit_log"}  # 0010
CONSOLE_TABLES = {"console_users"}  # 0011
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
    "idx_email_jobs_recipient_hash",
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
    assert migrate.current(url) == migrate.head() == "0011"
    assert tables(url) == TABLES | BULK_TABLES | TRACKING_TABLES | AUDIT_TABLES | CONSOLE_TABLES
    assert schema_differences(url) == []
    migrate.downgrade(url, "0001")
    assert columns(url, "email_jobs").isdisjoint(ADDED_COLUMNS)
    migrate.downgrade(url, "base")
    assert migrate.current(url) is None
    assert tables(url) == set()
    migrate.upgrade(url)
    assert migrate.current(url) == "0011"


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
    sealed_address, *rest = tuple(job)
    assert sealed_address != "ada@example.com"
    assert open_text("email_jobs.recipient_email", sealed_address) == "ada@example.com"
    assert rest == ["sent", None, None]
    assert str(tracking_job).replace("-", "") == job_id.replace("-", "")

    migrate.downgrade(url, "0001")
    assert row_counts(url) == before
    assert ADDED_INDEXES.isdisjoint(indexes(url, "email_jobs"))
    assert recipients(url) == ["ada@example.com"]  # opened again
    migrate.downgrade(url, "base")
    assert tables(url) == set()


def recipients(url: URL) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return list(connection.scalars(sa.text("SELECT recipient_email FROM email_jobs")))
    finally:
        engine.dispose()


def test_the_session_database_matches_the_models(database: str) -> None:
    assert schema_differences(admin_url(database=database)) == []


def _id(value: uuid.UUID, url: URL) -> str:
    return str(value) if url.get_backend_name() == "postgresql" else value.hex


def as_uuid(value: object) -> uuid.UUID | None:
    """A UUID column's value as read back: a UUID on PostgreSQL, hex text on SQLite."""
    return None if value is None else uuid.UUID(str(value))


@pytest.mark.parametrize("engine_name", ["postgresql", "sqlite"])
def test_0007_gives_jobs_to_the_key_that_asked_and_0008_keeps_one_form_of_each_address(
    engine_name: str, request: pytest.FixtureRequest
) -> None:
    from email_worker.addresses import comparable_address

    url: URL = request.getfixturevalue(URL_FIXTURES[engine_name])
    migrate.upgrade(url, "0006")
    ann, bob = uuid.uuid4(), uuid.uuid4()
    asked_by_ann, asked_by_both, by_a_producer = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            for key, name in ((ann, "ann"), (bob, "bob")):
                connection.execute(
                    sa.text(
                        "INSERT INTO api_keys (id, name, prefix, key_hash, created_at)"
                        " VALUES (:id, :name, :name, :name, '2026-12-01 00:00:00')"
                    ),
                    {"id": _id(key, url), "name": name},
                )
            for job in (asked_by_ann, asked_by_both, by_a_producer):
                connection.execute(
                    sa.text(
                        "INSERT INTO email_jobs (id, job_type, recipient_email)"
                        " VALUES (:id, 'email', 'cy@example.com')"
                    ),
                    {"id": _id(job, url)},
                )
            for key, job, idempotency_key in (
                (ann, asked_by_ann, "a1"),
                (ann, asked_by_both, "a2"),
                (bob, asked_by_both, "b1"),
            ):
                connection.execute(
                    sa.text(
                        "INSERT INTO api_requests (api_key_id, idempotency_key, body_hash,"
                        " job_id, created_at) VALUES (:key, :ikey, 'h', :job,"
                        " '2026-12-01 00:00:00')"
                    ),
                    {"key": _id(key, url), "ikey": idempotency_key, "job": _id(job, url)},
                )
            for address, reason, scope in (
                ("bob@müller.com", "hard_bounce", "all"),
                ("bob@xn--mller-kva.com", "unsubscribe", "marketing"),
                ("zoë@bücher.example", "complaint", "marketing"),
                ("dan@example.com", "manual", "all"),
            ):
                connection.execute(
                    sa.text(
                        "INSERT INTO email_suppressions (address, reason, scope, source,"
                        " created_at) VALUES (:address, :reason, :scope, 'test',"
                        " '2026-12-01 00:00:00')"
                    ),
                    {"address": address, "reason": reason, "scope": scope},
                )

        migrate.upgrade(url, "0008")
        with engine.connect() as connection:
            owners = dict(
                connection.execute(sa.text("SELECT id, api_key_id FROM email_jobs")).all()
            )
            listed = connection.execute(
                sa.text("SELECT address, reason, scope FROM email_suppressions ORDER BY address")
            ).all()
    finally:
        engine.dispose()
    assert {as_uuid(job): as_uuid(owner) for job, owner in owners.items()} == {
        asked_by_ann: ann,
        asked_by_both: None,  # two keys' requests name it: neither may read it
        by_a_producer: None,
    }
    assert [tuple(row) for row in listed] == [
        ("bob@xn--mller-kva.com", "hard_bounce", "all"),
        ("dan@example.com", "manual", "all"),
        ("zoë@xn--bcher-kva.example", "complaint", "marketing"),
    ]
    assert {row[0] for row in listed} == {
        comparable_address(a) for a in ("BOB@MÜLLER.COM", "Dan@Example.com", "ZOË@BÜCHER.example")
    }

    migrate.downgrade(url, "0006")
    assert "api_key_id" not in columns(url, "email_jobs")
    assert len(tables(url)) == len(TABLES | BULK_TABLES | TRACKING_TABLES)


@pytest.mark.parametrize("engine_name", ["postgresql", "sqlite"])
def test_0009_seals_the_personal_data_stored_before_and_downgrading_opens_it(
    engine_name: str, request: pytest.FixtureRequest
) -> None:
    url: URL = request.getfixturevalue(URL_FIXTURES[engine_name])
    migrate.upgrade(url, "0008")
    job, bulk = uuid.uuid4(), uuid.uuid4()
    payload = '{"to": ["Ann@Example.com"], "cc": ["cy@example.com"], "data": {"name": "Ann"}}'
    clear = {
        ("email_jobs", "recipient_email"): "Ann@Example.com",
        ("email_jobs", "subject"): "Ann, your booking",
        ("email_jobs", "template_data"): '{"name": "Ann"}',
        ("email_jobs", "payload"): payload,
        ("email_bulks", "payload"): '{"template_id": "newsletter"}',
        ("email_bulk_recipients", "address"): "bo@example.com",
        ("email_bulk_recipients", "data"): '{"name": "Bo"}',
        ("email_events", "recipient"): "cy@example.com",
        ("email_events", "payload"): '{"email": "cy@example.com"}',
        ("email_suppressions", "address"): "dan@example.com",
    }
    engine = sa.create_engine(url)
    statements = [
        "INSERT INTO email_jobs (id, job_type, recipient_email, subject, template_data, payload)"
        " VALUES (:job, 'welcome', 'Ann@Example.com', 'Ann, your booking', :data, :payload)",
        "INSERT INTO email_bulks (id, template_id, kind, payload, status, total, created_at,"
        " updated_at) VALUES (:bulk, 'newsletter', 'newsletter', :shared, 'completed', 1,"
        " '2026-12-01 00:00:00', '2026-12-01 00:00:00')",
        "INSERT INTO email_bulk_recipients (bulk_id, position, address, data, status, attempts,"
        " updated_at) VALUES (:bulk, 0, 'bo@example.com', :bo, 'sent', 1, '2026-12-01 00:00:00')",
        "INSERT INTO email_events (id, provider, provider_event_id, event_type, recipient,"
        " occurred_at, received_at, machine_open, payload) VALUES (:event, 'ses', 'e1',"
        " 'delivered', 'cy@example.com', '2026-12-01 00:00:00', '2026-12-01 00:00:00', false,"
        " :event_payload)",
        "INSERT INTO email_suppressions (address, reason, scope, source, created_at) VALUES"
        " ('dan@example.com', 'manual', 'all', 'test', '2026-12-01 00:00:00')",
    ]
    values = {
        "job": _id(job, url),
        "bulk": _id(bulk, url),
        "event": _id(uuid.uuid4(), url),
        "data": '{"name": "Ann"}',
        "payload": payload,
        "shared": '{"template_id": "newsletter"}',
        "bo": '{"name": "Bo"}',
        "event_payload": '{"email": "cy@example.com"}',
    }
    try:
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(sa.text(statement), values)

        migrate.upgrade(url)
        stored = stored_values(engine, clear)
        hashes = stored_values(
            engine,
            {
                ("email_jobs", "recipient_hash"): "",
                ("email_jobs", "recipient_hashes"): "",
                ("email_bulk_recipients", "address_hash"): "",
                ("email_events", "recipient_hash"): "",
                ("email_suppressions", "address_hash"): "",
            },
        )
        migrate.downgrade(url, "0008")
        opened = stored_values(engine, clear)
    finally:
        engine.dispose()
    for (table, column), value in clear.items():
        sealed = stored[table, column]
        # Sealed with the current key: base64 text, in which the clear value cannot appear.
        assert sealed.startswith(f"{keys().current_id}:") and value not in sealed
        assert _same(open_text(f"{table}.{column}", sealed), value), (table, column)
        assert _same(opened[table, column], value), (table, column)
    ann, cy = lookup_hash("ann@example.com"), lookup_hash("CY@example.com")
    assert hashes == {
        ("email_jobs", "recipient_hash"): ann,
        ("email_jobs", "recipient_hashes"): f"{ann} {cy}",
        ("email_bulk_recipients", "address_hash"): lookup_hash("bo@example.com"),
        ("email_events", "recipient_hash"): cy,
        ("email_suppressions", "address_hash"): lookup_hash("dan@example.com"),
    }


def stored_values(engine: sa.Engine, wanted: dict[tuple[str, str], str]) -> dict[Any, Any]:
    """Each column's one value as the database holds it (a jsonb column's, read as JSON)."""
    with engine.connect() as connection:
        return {
            (table, column): connection.execute(
                sa.text(f"SELECT {column} FROM {table}")
            ).scalar_one()
            for table, column in wanted
        }


def _same(found: Any, expected: str) -> bool:
    """Equal as text, or as JSON (PostgreSQL's jsonb writes its own spacing)."""
    if found == expected:
        return True
    if not isinstance(found, str):
        return bool(found == json.loads(expected))
    try:
        return bool(json.loads(found) == json.loads(expected))
    except ValueError:
        return False
