"""The console's overview: queue depths, the last hour's sends, circuits and bulk sends."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import pytest
import redis
import sqlalchemy as sa

from email_worker.config import get_settings
from email_worker.db import bulk
from email_worker.db.models import EmailJob, utcnow
from email_worker.db.session import primary_session
from email_worker.kinds import get_kind
from email_worker.providers.circuit import KEY_PREFIX, circuit_for
from email_worker.web.console import overview_data
from tests.conftest import DATABASE, purge_queues
from tests.support.pg import wait_for_replay

pytestmark = pytest.mark.usefixtures("clean_tables")


def job(kind: str, status: str, provider: str | None, *, age: dt.timedelta) -> None:
    """A tracked job of ``kind`` that reached ``status`` ``age`` ago."""
    moment = utcnow() - age
    with primary_session() as session:
        session.add(
            EmailJob(
                id=uuid.uuid4(),
                job_type=kind,
                status=status,
                provider=provider,
                created_at=moment - dt.timedelta(seconds=5),
                updated_at=moment,
                sent_at=moment if status in ("sent", "delivered", "bounced") else None,
            )
        )


def test_sends_failures_and_bounces_of_the_last_hour_by_kind_and_provider() -> None:
    minute = dt.timedelta(minutes=1)
    job("password_reset", "sent", "smtp", age=minute)
    job("password_reset", "delivered", "smtp", age=2 * minute)
    job("password_reset", "sent", "ses", age=3 * minute)
    job("password_reset", "failed", None, age=4 * minute)
    job("newsletter", "bounced", "smtp", age=5 * minute)
    job("newsletter", "sent", "smtp", age=dt.timedelta(hours=2))  # before the window
    job("welcome_email", "pending", None, age=minute)  # not sent, not failed
    wait_for_replay(DATABASE)
    overview = overview_data.read_overview()
    assert overview.sends.problem is None
    counts = {
        (row.kind, row.provider): (row.sent, row.failed, row.bounced) for row in overview.sends.rows
    }
    assert counts == {
        ("newsletter", "smtp"): (1, 0, 1),
        ("password_reset", None): (0, 1, 0),
        ("password_reset", "ses"): (1, 0, 0),
        ("password_reset", "smtp"): (2, 0, 0),
    }


def test_queue_depths_count_what_waits(celery_app: object, redis_client: redis.Redis) -> None:
    from email_worker.tasks import send_newsletter, send_password_reset

    purge_queues(redis_client)
    try:
        for _ in range(3):
            send_newsletter.delay(
                to="ann@example.com", data=dict(get_kind("newsletter").sample_data)
            )
        send_password_reset.delay(
            to="ann@example.com", data=dict(get_kind("password_reset").sample_data)
        )
        depths = {q.priority: q.waiting for q in overview_data.read_overview().queues.rows}
    finally:
        purge_queues(redis_client)
    assert depths["low"] == 3 and depths["high"] == 1 and depths["default"] == 0
    assert "periodic" in depths


@pytest.fixture
def forget_circuits(redis_client: redis.Redis) -> Iterator[None]:
    yield
    for key in redis_client.scan_iter(f"{KEY_PREFIX}{get_settings().queue_name}:*"):
        redis_client.delete(key)


def test_an_open_circuit_shows_with_its_masked_error(forget_circuits: None) -> None:
    settings = get_settings()
    circuit = circuit_for("smtp", settings)
    for _ in range(settings.circuit_failures):
        circuit.record_failure("421 try later for ann.lee@example.com")
    overview = overview_data.read_overview()
    (smtp,) = [p for p in overview.providers.rows if p.name == "smtp"]
    assert smtp.state == "open" and smtp.open and smtp.configured
    assert smtp.consecutive_failures == settings.circuit_failures
    assert smtp.last_error is not None and "ann.lee@example.com" not in smtp.last_error
    assert overview.open_circuits == [smtp]


def test_bulk_sends_in_progress_with_their_counts() -> None:
    running, finished = uuid.uuid4(), uuid.uuid4()
    with primary_session() as session:
        for bulk_id in (running, finished):
            bulk.create_bulk(
                session,
                bulk_id=bulk_id,
                template_id="newsletter",
                kind="newsletter",
                payload={},
                provider=None,
                recipients=[(f"r{i}@example.com", {}) for i in range(4)],
            )
        bulk.cancel_bulk(session, finished)
        session.execute(
            sa.update(bulk._RECIPIENTS)
            .where(bulk._RECIPIENTS.c.bulk_id == running, bulk._RECIPIENTS.c.position < 1)
            .values(status=bulk.SENT)
        )
    wait_for_replay(DATABASE)
    (shown,) = overview_data.read_overview().bulks.rows
    assert shown.id == running and shown.total == 4 and shown.kind == "newsletter"
    assert shown.counts["sent"] == 1 and shown.counts["pending"] == 3 and shown.done == 1


def test_with_redis_down_the_circuits_are_unknown_and_the_rest_still_shows(
    monkeypatch: pytest.MonkeyPatch, forget_circuits: None
) -> None:
    from email_worker.config import reset_settings

    job("password_reset", "sent", "smtp", age=dt.timedelta(minutes=1))
    wait_for_replay(DATABASE)
    monkeypatch.setenv("REDIS_PORT", "9")  # the circuits' Redis; the broker is the app's own
    reset_settings()
    try:
        overview = overview_data.read_overview()
    finally:
        monkeypatch.undo()
        reset_settings()
    (smtp,) = overview.providers.rows
    assert smtp.state == "unknown" and not smtp.open
    assert [(row.kind, row.sent) for row in overview.sends.rows] == [("password_reset", 1)]
