"""The producer HTTP API as a producer service sees it: real app, PostgreSQL and Redis."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.conftest import queue_length
from tests.support.commands import email_worker
from tests.support.pg import admin_url
from tests.support.processes import start_worker_process, stop
from tests.support.smtp_server import SmtpServer

INLINE = {"to": "ann.lee@example.com", "subject": "Your receipt", "text": "Thank you."}


@pytest.fixture
def key(clean_tables: None) -> str:
    from email_worker.db.api_keys import create_api_key

    return create_api_key("billing-service")[1]


def auth(key: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **headers}


def jobs_table() -> list[dict[str, Any]]:
    from tests.conftest import DATABASE

    engine = sa.create_engine(admin_url(database=DATABASE))
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT id, status, job_type FROM email_jobs"))
        found = [dict(row._mapping) for row in rows]
    engine.dispose()
    return found


def queued(client: redis.Redis) -> int:
    return sum(queue_length(client, priority) for priority in ("high", "default", "low"))


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer ew_0000_nope"}, {"Authorization": "Basic dXNlcjpwdw=="}],
    ids=["no key", "unknown key", "not bearer"],
)
def test_a_send_without_a_valid_key_is_refused_with_a_challenge(
    client: TestClient, redis_client: redis.Redis, headers: dict[str, str]
) -> None:
    answer = client.post("/v1/emails", json=INLINE, headers=headers)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert answer.json()["error"]["problem"]
    assert queued(redis_client) == 0 and jobs_table() == []
    assert client.get(f"/v1/emails/{uuid.uuid4()}", headers=headers).status_code == 401


def test_a_tracked_send_answers_its_job_id_and_the_job_is_pending(
    client: TestClient, key: str, redis_client: redis.Redis
) -> None:
    answer = client.post("/v1/emails", json={**INLINE, "tracked": True}, headers=auth(key))
    assert answer.status_code == 202
    assert answer.json()["status"] == "pending"
    job_id = answer.json()["id"]
    assert jobs_table() == [{"id": uuid.UUID(job_id), "status": "pending", "job_type": "email"}]
    assert queued(redis_client) == 1

    shown = client.get(f"/v1/emails/{job_id}", headers=auth(key)).json()
    assert shown["id"] == job_id and shown["status"] == "pending" and shown["events"] == []


def test_a_kind_is_sent_by_its_own_task(client: TestClient, key: str) -> None:
    from email_worker.kinds import get_kind

    data = dict(get_kind("password_reset").sample_data)
    body = {"kind": "password_reset", "to": "ann.lee@example.com", "data": data}
    answer = client.post("/v1/emails", json=body, headers=auth(key))
    assert answer.status_code == 202, answer.text
    assert jobs_table()[0]["job_type"] == "password_reset"  # a tracked kind
    assert answer.json() == {"id": str(jobs_table()[0]["id"]), "status": "pending"}


def test_a_fast_path_send_is_queued_and_its_task_id_is_not_shown(
    client: TestClient, key: str, redis_client: redis.Redis
) -> None:
    answer = client.post("/v1/emails", json=INLINE, headers=auth(key))
    assert answer.status_code == 202 and answer.json()["status"] == "queued"
    assert queued(redis_client) == 1 and jobs_table() == []
    assert client.get(f"/v1/emails/{answer.json()['id']}", headers=auth(key)).status_code == 404


def test_a_far_send_is_scheduled(client: TestClient, key: str, redis_client: redis.Redis) -> None:
    answer = client.post("/v1/emails", json={**INLINE, "countdown": 3600}, headers=auth(key))
    assert answer.status_code == 202 and answer.json()["status"] == "scheduled"
    assert jobs_table()[0]["status"] == "scheduled" and queued(redis_client) == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**INLINE, "to": "not an address"}, "to"),
        ({**INLINE, "colour": "blue"}, "colour"),
        ({**INLINE, "data": {"name": "Ann"}}, "data"),
        ({"to": "ann.lee@example.com"}, "template_id"),
        ({**INLINE, "priority": "urgent"}, "priority"),
        ({**INLINE, "eta": "next tuesday"}, "eta"),
        ({**INLINE, "countdown": 1e300}, "countdown"),
        ({**INLINE, "headers": {"Bcc": "eve@example.com"}}, "headers.Bcc"),
        ({"kind": "password_reset", "to": "a@example.com", "template_id": "x"}, "template_id"),
        (["not", "an", "object"], "body"),
    ],
)
def test_a_bad_request_is_refused_naming_the_field_as_the_producer_does(
    client: TestClient, key: str, redis_client: redis.Redis, body: Any, field: str
) -> None:
    answer = client.post("/v1/emails", json=body, headers=auth(key))
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"] == field
    assert queued(redis_client) == 0 and jobs_table() == []


def test_a_kind_without_the_variables_its_template_needs_is_refused_naming_every_one(
    client: TestClient, key: str, redis_client: redis.Redis
) -> None:
    reset = {"kind": "password_reset", "to": "ann.lee@example.com", "data": {"user_name": "A"}}
    answer = client.post("/v1/emails", json=reset, headers=auth(key))
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == {
        "field": "data",
        "problem": "missing variables of template 'password_reset': expires_in_minutes, reset_url",
    }
    newsletter = {"kind": "newsletter", "to": "ann.lee@example.com", "data": {}}
    answer = client.post("/v1/emails", json=newsletter, headers=auth(key))
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["problem"].endswith(
        "'newsletter': events, headline, intro, product_name, user_name"
    )
    assert queued(redis_client) == 0 and jobs_table() == []


def test_one_address_ten_thousand_times_is_sent_to_once_with_one_to_entry(
    client: TestClient, key: str, smtp: SmtpServer, tmp_path: Path
) -> None:
    body = {**INLINE, "to": ["ann.lee@example.com"] * 10_000, "cc": "Ann.Lee@EXAMPLE.com"}
    answer = client.post("/v1/emails", json=body, headers=auth(key))
    assert answer.status_code == 202, answer.text
    worker = start_worker_process(tmp_path / "worker.log")
    try:
        (received,) = smtp.wait_for(1, timeout=30)
    finally:
        stop(worker)
    assert received.recipients == ["ann.lee@example.com"] and smtp.handler.rcpt_attempts == 1
    assert received.message.get_all("To") == ["ann.lee@example.com"]
    assert received.message["Cc"] is None


def test_a_body_that_is_not_json_or_too_large_is_refused(client: TestClient, key: str) -> None:
    from email_worker.config import get_settings

    answer = client.post("/v1/emails", content=b"{nope", headers=auth(key))
    assert answer.status_code == 422 and answer.json()["error"]["field"] == "body"
    answer = client.post("/v1/emails", content=b'{"to": NaN}', headers=auth(key))
    assert answer.status_code == 422 and answer.json()["error"]["field"] == "body"
    huge = b" " * int(get_settings().max_message_bytes * 1.5)
    answer = client.post("/v1/emails", content=huge, headers=auth(key))
    assert answer.status_code == 413


def test_an_idempotent_request_repeated_makes_one_job_and_one_email(
    client: TestClient, key: str, smtp: SmtpServer, tmp_path: Path
) -> None:
    headers = auth(key, **{"Idempotency-Key": "order-1138-receipt"})
    first = client.post("/v1/emails", json=INLINE, headers=headers)
    again = client.post("/v1/emails", json=dict(reversed(INLINE.items())), headers=headers)
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert len(jobs_table()) == 1

    changed = client.post("/v1/emails", json={**INLINE, "text": "Other."}, headers=headers)
    assert changed.status_code == 422
    assert changed.json()["error"]["field"] == "Idempotency-Key"

    worker = start_worker_process(tmp_path / "worker.log")
    try:
        smtp.wait_for(1, timeout=30)
        job_url = f"/v1/emails/{first.json()['id']}"
        deadline = time.monotonic() + 10
        while client.get(job_url, headers=auth(key)).json()["status"] != "sent":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        third = client.post("/v1/emails", json=INLINE, headers=headers)
        time.sleep(1.0)  # a second email would arrive now
    finally:
        stop(worker)
    assert third.status_code == 200 and third.json() == {"id": first.json()["id"], "status": "sent"}
    assert len(smtp.received) == 1 and len(jobs_table()) == 1


def test_the_same_idempotency_key_of_another_api_key_is_another_request(
    client: TestClient, key: str
) -> None:
    from email_worker.db.api_keys import create_api_key

    other = create_api_key("booking-service")[1]
    one = client.post("/v1/emails", json=INLINE, headers=auth(key, **{"Idempotency-Key": "k1"}))
    two = client.post("/v1/emails", json=INLINE, headers=auth(other, **{"Idempotency-Key": "k1"}))
    assert one.status_code == two.status_code == 202
    assert one.json()["id"] != two.json()["id"] and len(jobs_table()) == 2


def test_unknown_ids_are_not_found(client: TestClient, key: str) -> None:
    for job_id in (str(uuid.uuid4()), "not-a-uuid", "%00"):
        answer = client.get(f"/v1/emails/{job_id}", headers=auth(key))
        assert answer.status_code == 404 and answer.json()["error"]["problem"]


def test_a_key_reads_only_its_own_jobs_and_another_keys_look_like_none(
    client: TestClient, key: str
) -> None:
    from email_worker.db.api_keys import create_api_key

    other = create_api_key("booking-service")[1]
    tracked = client.post("/v1/emails", json={**INLINE, "tracked": True}, headers=auth(key))
    later = client.post("/v1/emails", json={**INLINE, "countdown": 3600}, headers=auth(key))
    for sent in (tracked, later):
        job_url = f"/v1/emails/{sent.json()['id']}"
        assert client.get(job_url, headers=auth(key)).status_code == 200
        theirs = client.get(job_url, headers=auth(other))
        nothing = client.get(f"/v1/emails/{uuid.uuid4()}", headers=auth(other))
        assert theirs.status_code == nothing.status_code == 404
        assert theirs.json() == nothing.json()


def test_a_body_idempotency_key_belongs_to_the_api_key_that_sent_it(
    client: TestClient, key: str
) -> None:
    from email_worker.db.api_keys import create_api_key

    other = create_api_key("booking-service")[1]
    body = {**INLINE, "idempotency_key": "order-1138", "tracked": True}
    first = client.post("/v1/emails", json=body, headers=auth(key))
    repeat = client.post("/v1/emails", json=body, headers=auth(key))
    theirs = client.post("/v1/emails", json=body, headers=auth(other))
    assert first.status_code == repeat.status_code == theirs.status_code == 202
    assert repeat.json()["id"] == first.json()["id"] != theirs.json()["id"]
    assert len(jobs_table()) == 2  # the other key's email is its own, not a repeat of ours
    assert client.get(f"/v1/emails/{theirs.json()['id']}", headers=auth(other)).status_code == 200
    too_long = {**body, "idempotency_key": "k" * 223}
    refused = client.post("/v1/emails", json=too_long, headers=auth(key))
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "idempotency_key"


@pytest.mark.parametrize(
    ("provider", "reason"),
    [
        ("console", "'console' keeps the message on the worker host"),
        ("outbox", "'outbox' keeps the message on the worker host"),
        ("ses", "'ses' is not configured here; choose one of: smtp"),
        ("sendgrid", "'sendgrid' is not configured here; choose one of: smtp"),
    ],
)
def test_a_caller_cannot_choose_a_provider_that_is_not_configured_or_keeps_mail_on_the_host(
    client: TestClient, key: str, redis_client: redis.Redis, provider: str, reason: str
) -> None:
    body = {**INLINE, "provider": provider}
    for headers in (auth(key), auth(key, **{"Idempotency-Key": f"try-{provider}"})):
        answer = client.post("/v1/emails", json=body, headers=headers)
        assert answer.status_code == 422, answer.text
        error = answer.json()["error"]
        assert error["field"] == "provider" and reason in error["problem"]
    assert queued(redis_client) == 0 and jobs_table() == []
    allowed = client.post("/v1/emails", json={**INLINE, "provider": "smtp"}, headers=auth(key))
    assert allowed.status_code == 202


@pytest.mark.parametrize("missing", ["TRACKING_SECRET", "PUBLIC_URL", "SENDER_POSTAL_ADDRESS"])
def test_a_newsletter_that_cannot_carry_unsubscribe_and_an_address_is_refused_saying_why(
    client: TestClient,
    key: str,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    missing: str,
) -> None:
    from email_worker.config import reset_settings
    from email_worker.kinds import get_kind

    monkeypatch.setenv(missing, "")
    reset_settings()
    try:
        data = dict(get_kind("newsletter").sample_data)
        body = {"kind": "newsletter", "to": "ann.lee@example.com", "data": data}
        answer = client.post("/v1/emails", json=body, headers=auth(key))
    finally:
        monkeypatch.undo()
        reset_settings()
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["field"] == "kind" and f"{missing} is not set" in error["problem"]
    assert "DELIVERY_MODE is live" in error["problem"]
    assert queued(redis_client) == 0 and jobs_table() == []


@pytest.mark.parametrize(
    "filename", ["a.exe::$DATA", "a.exe:stream", "report.pdf:payload.exe", "a.exe.", "a.exe "]
)
def test_an_executable_hidden_by_windows_name_syntax_is_refused(
    client: TestClient, key: str, redis_client: redis.Redis, filename: str
) -> None:
    attachment = {"filename": filename, "content": "TVqQAA==", "content_type": "application/pdf"}
    body = {**INLINE, "attachments": [attachment]}
    answer = client.post("/v1/emails", json=body, headers=auth(key))
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == {
        "field": "attachments[0].filename",
        "problem": "executable files (.exe) cannot be attached",
    }
    assert queued(redis_client) == 0 and jobs_table() == []


def test_api_keys_are_created_listed_and_revoked_from_the_command_line(
    client: TestClient, clean_tables: None
) -> None:
    created = email_worker("api-keys", "create", "billing-service")
    new_key = created.stdout.strip()
    assert new_key.startswith("ew_") and "shown once" in created.stderr
    prefix = new_key.split("_")[1]
    assert client.post("/v1/emails", json=INLINE, headers=auth(new_key)).status_code == 202

    listing = email_worker("api-keys", "list").stdout
    assert prefix in listing and "billing-service" in listing and "active" in listing
    assert new_key.split("_", 2)[2] not in listing  # the secret is never shown again
    assert "last used 20" in listing

    email_worker("api-keys", "revoke", prefix)
    assert "revoked" in email_worker("api-keys", "list").stdout
    refused = client.post("/v1/emails", json=INLINE, headers=auth(new_key))
    assert refused.status_code == 401
    missing = email_worker("api-keys", "revoke", "zzzzzzzz", check=False)
    assert missing.returncode == 2 and "no API key" in missing.stderr


def test_health_and_metrics_are_the_workers(client: TestClient) -> None:
    answer = client.get("/health")
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] in ("healthy", "degraded")
    assert {"timestamp", "version", "uptime", "queue", "database", "providers"} <= set(body)
    assert body["database"]["primary"]["status"] == "up"
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and "email_worker_up 1.0" in metrics.text
