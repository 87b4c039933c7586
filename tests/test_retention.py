"""Retention: personal fields cleared once a row is finished and PERSONAL_DATA_RETENTION passed.

Against the real database: rows are stored with the service's models (so sealed as in
production), and what retention left is read back with raw SQL, as a dump would show it.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from email_worker.db import bulk, retention
from email_worker.db import status as st
from email_worker.db.models import (
    ApiKey,
    ApiRequest,
    Base,
    EmailBulk,
    EmailBulkRecipient,
    EmailEvent,
    EmailJob,
    utcnow,
)
from email_worker.db.personal_data import CLEARED
from email_worker.db.sealed_columns import Sealed
from email_worker.db.sealing import lookup_hash, lookup_hashes
from email_worker.db.session import primary_session
from tests.conftest import DATABASE
from tests.support.commands import email_worker
from tests.support.paths import ROOT
from tests.support.pg import admin_url, wait_for_replay
from tests.support.waiting import wait_for

pytestmark = pytest.mark.usefixtures("clean_tables")

RETENTION = dt.timedelta(days=7)  # the default PERSONAL_DATA_RETENTION, which the tests keep
ADDRESS = "rita.retained@example.com"
OLD = dt.timedelta(days=8)  # finished this long ago: past the retention time
RECENT = dt.timedelta(days=1)
NOT_FINISHED = (st.PENDING, st.SCHEDULED, st.RETRYING, st.SENDING)


@pytest.fixture(scope="module")
def raw() -> Iterator[sa.Engine]:
    """A plain connection to the test database: what is stored, not what the models open."""
    engine = sa.create_engine(admin_url(database=DATABASE))
    yield engine
    engine.dispose()


def cutoff() -> dt.datetime:
    """The moment before which a finished row's personal data goes."""
    return utcnow() - RETENTION


def clear(**options: Any) -> dict[str, int]:
    """Run retention as beat's task does, on the primary."""
    with primary_session() as session:
        return retention.clear_personal_data(session, cutoff(), **options)


def stored_columns(raw: sa.Engine, table: str, key: str, value: Any) -> dict[str, Any]:
    """The personal columns (and when they were cleared, for jobs) of one row, as stored."""
    names = list(CLEARED[table])
    if table == "email_jobs":
        names.append("personal_data_cleared_at")
    query = sa.text(f"SELECT {', '.join(names)} FROM {table} WHERE {key} = :value")
    with raw.connect() as connection:
        return dict(connection.execute(query, {"value": value}).mappings().one())


def assert_cleared(row: dict[str, Any]) -> None:
    personal = {name: value for name, value in row.items() if name != "personal_data_cleared_at"}
    assert set(personal.values()) == {None}, personal
    if "personal_data_cleared_at" in row:
        assert row["personal_data_cleared_at"] is not None


def assert_kept(row: dict[str, Any]) -> None:
    personal = {name: value for name, value in row.items() if name != "personal_data_cleared_at"}
    assert None not in personal.values(), personal
    assert row.get("personal_data_cleared_at") is None


def add_job(status: str, age: dt.timedelta) -> uuid.UUID:
    """A job in ``status`` last changed ``age`` ago, with every personal field filled."""
    job = EmailJob(
        job_type="welcome_email",
        recipient_email=ADDRESS,
        recipient_hash=lookup_hash(ADDRESS),
        recipient_hashes=lookup_hashes([ADDRESS, "cc.person@example.com"]),
        subject="Welcome, Rita",
        template_id="welcome_email",
        template_data={"name": "Rita Retained"},
        payload={"to": [ADDRESS], "data": {"name": "Rita Retained"}},
        recipient_results={"accepted": 1, "refused": {}},
        status=status,
        updated_at=utcnow() - age,
    )
    with primary_session() as session:
        session.add(job)
        session.flush()
        return job.id


def add_event(received: dt.timedelta, *, applied: bool) -> uuid.UUID:
    """A provider event received ``received`` ago, applied or not."""
    when = utcnow() - received
    event = EmailEvent(
        provider="sendgrid",
        provider_event_id=uuid.uuid4().hex,
        provider_message_id="msg-1",
        event_type="delivered",
        recipient=ADDRESS,
        recipient_hash=lookup_hash(ADDRESS),
        occurred_at=when,
        received_at=when,
        applied_at=when if applied else None,
        payload={"email": ADDRESS, "event": "delivered"},
    )
    with primary_session() as session:
        session.add(event)
        session.flush()
        return event.id


def add_bulk(status: str, age: dt.timedelta, recipients: dict[str, dt.timedelta]) -> uuid.UUID:
    """A bulk in ``status`` last changed ``age`` ago, one recipient per status given."""
    when = utcnow() - age
    bulk_id = uuid.uuid4()
    with primary_session() as session:
        session.add(
            EmailBulk(
                id=bulk_id,
                template_id="newsletter",
                kind="newsletter",
                payload={"from_name": "Rita's club", "data": {"issue": 3}},
                status=status,
                total=len(recipients),
                created_at=when,
                updated_at=when,
            )
        )
        session.flush()
        session.add_all(
            EmailBulkRecipient(
                bulk_id=bulk_id,
                position=position,
                address=f"reader{position}@example.com",
                address_hash=lookup_hash(f"reader{position}@example.com"),
                data={"name": f"Reader {position}"},
                status=recipient_status,
                updated_at=utcnow() - recipient_age,
            )
            for position, (recipient_status, recipient_age) in enumerate(recipients.items())
        )
    return bulk_id


def recipient_rows(raw: sa.Engine, bulk_id: uuid.UUID) -> dict[str, dict[str, Any]]:
    """Each recipient's personal columns as stored, by its status."""
    names = ", ".join(CLEARED["email_bulk_recipients"])
    query = sa.text(f"SELECT status, {names} FROM email_bulk_recipients WHERE bulk_id = :b")
    with raw.connect() as connection:
        rows = connection.execute(query, {"b": bulk_id}).mappings().all()
    return {row["status"]: {k: v for k, v in row.items() if k != "status"} for row in rows}


def test_finished_jobs_past_retention_are_cleared_and_every_other_job_keeps_its_data(
    raw: sa.Engine,
) -> None:
    old_finished = {status: add_job(status, OLD) for status in st.FINISHED}
    recent_finished = {status: add_job(status, RECENT) for status in st.FINISHED}
    old_unfinished = {status: add_job(status, OLD * 10) for status in NOT_FINISHED}

    assert clear()["email_jobs"] == len(st.FINISHED)

    for job_id in old_finished.values():
        assert_cleared(stored_columns(raw, "email_jobs", "id", job_id))
    for job_id in [*recent_finished.values(), *old_unfinished.values()]:
        assert_kept(stored_columns(raw, "email_jobs", "id", job_id))
    assert clear()["email_jobs"] == 0  # cleared jobs are not taken again


def test_events_are_cleared_once_applied_or_past_the_match_window(raw: sa.Engine) -> None:
    applied_old = add_event(OLD, applied=True)
    applied_recent = add_event(RECENT, applied=True)
    unmatched_old = add_event(OLD, applied=False)
    # Past the retention time, but not past it plus the hour an event may still be matched.
    unmatched_just_past = add_event(RETENTION + dt.timedelta(minutes=20), applied=False)

    assert clear()["email_events"] == 2

    for event_id in (applied_old, unmatched_old):
        assert_cleared(stored_columns(raw, "email_events", "id", event_id))
    for event_id in (applied_recent, unmatched_just_past):
        assert_kept(stored_columns(raw, "email_events", "id", event_id))


def test_final_bulk_recipients_and_finished_bulks_are_cleared(raw: sa.Engine) -> None:
    every_status = dict.fromkeys(bulk.RECIPIENT_STATUSES, OLD)
    old_bulk = add_bulk(bulk.BULK_SENDING, OLD, every_status)
    recent = add_bulk(bulk.BULK_COMPLETED, RECENT, dict.fromkeys(retention.RECIPIENT_FINAL, RECENT))
    completed = add_bulk(bulk.BULK_COMPLETED, OLD, {})
    cancelled = add_bulk(bulk.BULK_CANCELLED, OLD, {})

    counts = clear()

    assert counts["email_bulk_recipients"] == len(retention.RECIPIENT_FINAL)
    rows = recipient_rows(raw, old_bulk)
    for status in bulk.RECIPIENT_STATUSES:
        if status in retention.RECIPIENT_FINAL:
            assert_cleared(rows[status])
        else:
            assert_kept(rows[status])  # a worker still needs the address and data
    for row in recipient_rows(raw, recent).values():
        assert_kept(row)
    assert counts["email_bulks"] == 2
    for bulk_id in (completed, cancelled):
        assert_cleared(stored_columns(raw, "email_bulks", "id", bulk_id))
    for bulk_id in (old_bulk, recent):  # one still sending, one finished recently
        assert_kept(stored_columns(raw, "email_bulks", "id", bulk_id))


def test_idempotency_records_past_retention_are_deleted(raw: sa.Engine) -> None:
    with primary_session() as session:
        key = ApiKey(name="shop", prefix="ew_test", key_hash=uuid.uuid4().hex)
        session.add(key)
        session.flush()
        for name, age in (("old-request", OLD), ("recent-request", RECENT)):
            session.add(
                ApiRequest(
                    api_key_id=key.id,
                    idempotency_key=name,
                    body_hash="0" * 64,
                    job_id=uuid.uuid4(),
                    created_at=utcnow() - age,
                )
            )

    assert clear()["api_requests"] == 1

    with raw.connect() as connection:
        left = connection.execute(sa.text("SELECT idempotency_key FROM api_requests")).scalars()
        assert list(left) == ["recent-request"]


def test_a_backlog_larger_than_a_batch_is_all_cleared_and_a_second_run_clears_nothing(
    raw: sa.Engine,
) -> None:
    jobs = [add_job(st.SENT, OLD) for _ in range(23)]
    events = [add_event(OLD, applied=True) for _ in range(12)]

    counts = clear(batch_size=5)

    assert (counts["email_jobs"], counts["email_events"]) == (23, 12)
    for job_id in jobs:
        assert_cleared(stored_columns(raw, "email_jobs", "id", job_id))
    for event_id in events:
        assert_cleared(stored_columns(raw, "email_events", "id", event_id))
    assert set(clear(batch_size=5).values()) == {0}


def test_a_batch_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="batch_size: must be at least 1"):
        clear(batch_size=0)


def test_beat_runs_the_task_and_it_clears_logging_counts_only(
    raw: sa.Engine, celery_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from email_worker.worker.periodic import clear_personal_data

    entries = {entry["task"]: entry for entry in celery_app.conf.beat_schedule.values()}
    assert entries["email_worker.clear_personal_data"]["schedule"] > 0
    assert "email_worker.clear_personal_data" in celery_app.tasks
    old, recent = add_job(st.DELIVERED, OLD), add_job(st.DELIVERED, RECENT)

    with caplog.at_level(logging.INFO, logger="email_worker.worker.periodic"):
        counts = clear_personal_data()  # what the worker runs when beat sends it

    assert counts["email_jobs"] == 1
    assert_cleared(stored_columns(raw, "email_jobs", "id", old))
    assert_kept(stored_columns(raw, "email_jobs", "id", recent))
    [line] = [r for r in caplog.records if r.getMessage() == "personal data cleared"]
    assert line.__dict__["email_jobs"] == 1
    assert ADDRESS not in caplog.text and "Rita" not in caplog.text


def test_a_worker_clears_when_beat_sends_the_task(
    raw: sa.Engine, celery_app: Any, worker: Any
) -> None:
    [entry] = [
        entry
        for entry in celery_app.conf.beat_schedule.values()
        if entry["task"] == "email_worker.clear_personal_data"
    ]
    old, recent = add_job(st.BOUNCED, OLD), add_job(st.BOUNCED, RECENT)

    celery_app.send_task(entry["task"], **entry.get("options", {}))  # as beat sends it

    wait_for(
        lambda: stored_columns(raw, "email_jobs", "id", old)["personal_data_cleared_at"],
        "the worker to clear the old job",
    )
    assert_cleared(stored_columns(raw, "email_jobs", "id", old))
    assert_kept(stored_columns(raw, "email_jobs", "id", recent))


def test_jobs_show_and_list_say_cleared_for_a_cleared_job() -> None:
    job_id = add_job(st.SENT, OLD)
    clear()
    wait_for_replay(DATABASE)

    shown = email_worker("jobs", "show", str(job_id)).stdout
    fields = dict(line.split(None, 1) for line in shown.splitlines() if " " in line.strip())
    assert fields["recipient_email"] == "(cleared)"
    assert fields["subject"] == "(cleared)"
    assert fields["personal_data_cleared_at"] != "-"
    listed = email_worker("jobs", "list", "--status", "sent").stdout
    assert str(job_id) in listed and listed.rstrip().endswith("(cleared)")


# The data map in docs/privacy.md, compared with the models.


def data_map() -> dict[str, set[str]]:
    """Each table of the map with the columns its row names (in backticks)."""
    text = (ROOT / "docs" / "privacy.md").read_text(encoding="utf-8")
    section = text.split("\n## Data map\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    found: dict[str, set[str]] = {}
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        table = cells[0].strip("`")
        found[table] = set(re.findall(r"`([a-z_]+)`", cells[1]))
    return found


def test_the_data_map_names_every_sealed_and_hash_column_and_only_real_ones() -> None:
    mapped = data_map()
    tables = Base.metadata.tables
    for table in tables.values():
        needed = {
            column.name
            for column in table.columns
            if isinstance(column.type, Sealed) or re.search(r"_hash(es)?$", column.name)
        }
        needed |= set(CLEARED.get(table.name, ()))
        if needed:
            assert table.name in mapped, f"{table.name} is missing from the data map"
            assert needed <= mapped[table.name], f"{table.name}: {needed - mapped[table.name]}"
    for name, columns in mapped.items():
        assert name in tables, f"the data map names a table that does not exist: {name}"
        unknown = columns - set(tables[name].columns.keys())
        assert not unknown, f"the data map names columns {name} does not have: {unknown}"
