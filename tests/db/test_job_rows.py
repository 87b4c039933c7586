"""A new job's row and a stored template read through psycopg alone, held to the models.

The producer stores its tracked jobs, and the renderer reads stored templates, without
SQLAlchemy on PostgreSQL (email_worker.db.direct): what they write and read must stay
what the models and the engines' path write and read.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.dialects import postgresql

from email_worker.db import direct, job_rows, new_jobs, templates
from email_worker.db.engines import Engines
from email_worker.db.job_table import JOBS
from email_worker.db.models import EmailJob
from email_worker.db.sealed_columns import Sealed
from email_worker.db.session import RoutingSession
from email_worker.db.template_rows import active_template_parts
from email_worker.db.timestamps import POSTGRESQL_UTC_NOW
from email_worker.errors import InvalidEmailRequest
from email_worker.kinds import get_kind
from email_worker.producer.publishing import check_request
from email_worker.producer.stored_jobs import DatabaseUnavailable, store_job
from tests.support.pg import HOST, PRIMARY_PORT, wait_for_replay
from tests.support.ports import free_port

JOB: dict[str, Any] = {
    "job_type": "password_reset",
    "recipient_email": "Ann.Lee@Example.com",
    "payload": {"to": ["Ann.Lee@Example.com"], "cc": "bob@example.com", "kind": "x"},
    "subject": "Reset your password, Ann",
    "template_id": "password_reset",
    "template_data": {"user_name": "Ann Lee", "reset_url": "https://example.com/r/1"},
    "priority": 2,
    "max_retries": 5,
    "scheduled_at": dt.datetime(2030, 1, 2, 3, 4, 5),
    "idempotency_key": None,
    "status": "scheduled",
    "retry_count": 1,
}


def columns_of(sql: str) -> list[str]:
    found = re.search(r"INSERT INTO email_jobs \(([^)]*)\)", sql)
    assert found, sql
    return [name.strip() for name in found.group(1).split(",")]


def test_the_direct_insert_names_the_columns_of_the_model_and_of_the_engines_insert() -> None:
    engines_sql = str(
        new_jobs._insert_statement(postgresql.insert(JOBS)).compile(dialect=postgresql.dialect())
    )
    # SQLAlchemy writes them in the table's order.
    assert sorted(columns_of(job_rows.INSERT_SQL)) == sorted(columns_of(engines_sql))
    assert set(columns_of(job_rows.INSERT_SQL)) <= {column.name for column in JOBS.c}
    for sql in (job_rows.INSERT_SQL, engines_sql):
        assert sql.count(POSTGRESQL_UTC_NOW) == len(job_rows.STAMPED)
        assert "ON CONFLICT DO NOTHING" in sql
    # The columns the model seals are those sealed here, each with the model's purpose.
    sealed = {
        column.name: column.type
        for column in JOBS.c
        if isinstance(column.type, Sealed) and column.name in job_rows.INSERTED
    }
    assert {name: kind.json for name, kind in sealed.items()} == job_rows.SEALED
    assert all(kind.purpose == f"email_jobs.{name}" for name, kind in sealed.items())


def test_a_job_stored_directly_reads_back_as_one_stored_through_the_engines(
    point_at: Callable[..., None], db: Engines, new_session: Callable[..., RoutingSession]
) -> None:
    with direct.primary() as connection:
        direct_id, created = job_rows.insert(connection, job_rows.job_values(**JOB))
    assert created
    session = new_session(primary=True)
    engines_id, _ = new_jobs.insert_job(session, **JOB)
    session.commit()
    stored = {
        job_id: session.get(EmailJob, job_id, populate_existing=True)
        for job_id in (direct_id, engines_id)
    }
    seen = [
        {
            column.name: getattr(job, column.name)
            for column in JOBS.c
            if column.name not in ("id", "created_at", "updated_at")
        }
        for job in stored.values()
    ]
    assert seen[0] == seen[1]
    assert seen[0]["recipient_email"] == JOB["recipient_email"]  # opened with the key
    assert seen[0]["template_data"] == JOB["template_data"]
    direct_job = stored[direct_id]
    assert direct_job is not None
    assert direct_job.created_at == direct_job.updated_at
    assert abs(direct_job.created_at - dt.datetime.now(dt.UTC).replace(tzinfo=None)) < dt.timedelta(
        minutes=1
    )


def test_a_stored_id_or_idempotency_key_returns_the_stored_job(
    point_at: Callable[..., None], db: Engines
) -> None:
    job_id, key = uuid.uuid4(), f"key-{uuid.uuid4()}"
    values = job_rows.job_values(**{**JOB, "job_id": job_id, "idempotency_key": key})
    with direct.primary(transaction=False) as connection:
        assert job_rows.insert(connection, values) == (job_id, True)
        assert job_rows.insert(connection, values) == (job_id, False)
        again = job_rows.job_values(**{**JOB, "idempotency_key": key})
        assert job_rows.insert(connection, again) == (job_id, False)
        count = connection.execute("SELECT count(*) FROM email_jobs").fetchone()
    assert count == (1,)


def test_an_active_template_reads_alike_through_psycopg_and_the_model(
    point_at: Callable[..., None],
    db: Engines,
    new_session: Callable[..., RoutingSession],
    database: str,
) -> None:
    session = new_session(primary=True)
    for template_id, active in (("on", True), ("off", False)):
        templates.upsert_template(
            session,
            id=template_id,
            name=template_id,
            subject=f"Subject {template_id}",
            html_template=None,
            text_template="Body {{ name }}",
            is_active=active,
        )
    session.commit()
    wait_for_replay(database)
    for template_id in ("on", "off", "missing"):
        model = templates.get_active_template(session, template_id)
        expected = (
            None if model is None else (model.subject, model.html_template, model.text_template)
        )
        with direct.replica() as connection:
            assert active_template_parts(connection, template_id) == expected
    assert expected is None


def stored(**options: Any) -> tuple[uuid.UUID, bool]:
    kind = get_kind("password_reset")
    request = check_request(kind, (), {"to": "ann@example.com", "data": dict(kind.sample_data)})
    return store_job(kind, request, scheduled_at=None, scheduled=False, **options)


def test_the_producer_stores_a_job_once_and_refuses_a_row_the_table_cannot_hold(
    postgresql_or_sqlite: str,
) -> None:
    job_id = uuid.uuid4()
    assert stored(job_id=job_id) == (job_id, True)
    assert stored(job_id=job_id) == (job_id, False)
    if postgresql_or_sqlite == "postgresql":  # SQLite enforces no foreign key by default
        with pytest.raises(InvalidEmailRequest, match="payload: the job cannot be stored: "):
            stored(api_key_id=uuid.uuid4())  # no such API key


def test_the_producer_stores_again_after_the_server_ended_its_pooled_connection(
    point_at: Callable[..., None], db: Engines
) -> None:
    import psycopg

    stored()
    with direct.primary() as connection:
        pid = connection.execute("SELECT pg_backend_pid()").fetchone()
    with psycopg.connect(host=HOST, port=PRIMARY_PORT, user="postgres", autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", pid)
    assert stored()[1]


def test_a_producer_whose_primary_cannot_be_reached_is_told_so(
    point_at: Callable[..., None], database: str
) -> None:
    point_at(f"postgresql+psycopg://postgres@{HOST}:{free_port()}/{database}")
    with pytest.raises(DatabaseUnavailable, match=r"\(OperationalError\); nothing was queued"):
        stored()
