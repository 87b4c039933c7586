"""POST /webhooks/sendgrid: signed batches are stored once and applied; others change nothing."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

import email_worker.worker.provider_events  # noqa: F401  registers the apply task on the worker
from email_worker.config import reset_settings
from email_worker.db import job_queries, new_jobs, send_path
from email_worker.db.events import BATCH
from email_worker.db.models import EmailEvent, EmailJob, EmailSuppression
from email_worker.db.session import primary_session
from email_worker.tracking.sendgrid_webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER
from email_worker.web import webhooks
from email_worker.worker.provider_events import apply_pending_events
from tests.support.jobs import stored_verification_job

pytestmark = pytest.mark.usefixtures("worker", "clean_tables")
KEY = ec.generate_private_key(ec.SECP256R1())
# SendGrid shows the public key as base64 DER, without PEM armour.
PUBLIC_KEY = base64.b64encode(
    KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()


@pytest.fixture(autouse=True)
def settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("SENDGRID_WEBHOOK_PUBLIC_KEY", PUBLIC_KEY)
    reset_settings()
    yield
    monkeypatch.undo()
    reset_settings()


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    app.include_router(webhooks.router)
    return TestClient(app)


def signed(body: bytes, key: ec.EllipticCurvePrivateKey = KEY, at: float | None = None) -> dict:
    timestamp = str(int(time.time() if at is None else at))
    signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        SIGNATURE_HEADER: base64.b64encode(signature).decode(),
        TIMESTAMP_HEADER: timestamp,
        "Content-Type": "application/json",
    }


def event(name: str, job_id: uuid.UUID, at: int, **fields: Any) -> dict[str, Any]:
    return {
        "event": name,
        "sg_event_id": f"{name}-{job_id}-{at}",
        "sg_message_id": "sgmsg1.filter0001.16648.5515E0B88.0",
        "email": "ann@example.com",
        "timestamp": at,
        "email_worker_id": str(job_id),
        **fields,
    }


def post(client: TestClient, batch: list[dict[str, Any]]) -> dict[str, Any]:
    body = json.dumps(batch).encode()
    response = client.post("/webhooks/sendgrid", content=body, headers=signed(body))
    assert response.status_code == 200, response.text
    return response.json()


def sent_job(message_id: str = "sgmsg1") -> uuid.UUID:
    job_id = stored_verification_job()
    with primary_session() as session:
        send_path.mark_sent(
            session, job_id, claim_token=None, provider="sendgrid", provider_message_id=message_id
        )
    return job_id


def job_after(job_id: uuid.UUID, wanted: str, timeout: float = 10.0) -> EmailJob:
    """The job once the worker has applied the events and it reached ``wanted``."""
    deadline = time.monotonic() + timeout
    while True:
        with primary_session() as session:
            job = job_queries.get_job(session, job_id)
        assert job is not None
        if job.status == wanted or time.monotonic() > deadline:
            assert job.status == wanted
            return job
        time.sleep(0.05)


def stored_events() -> int:
    with primary_session() as session:
        return session.scalar(select(func.count()).select_from(EmailEvent)) or 0


def applied_events() -> int:
    with primary_session() as session:
        applied = select(func.count()).where(EmailEvent.applied_at.is_not(None))
        return session.scalar(applied) or 0


def test_a_signed_batch_is_stored_and_moves_the_job_to_delivered_then_opened(
    client: TestClient,
) -> None:
    job_id = sent_job()
    t = int(time.time())
    assert post(client, [event("processed", job_id, t), event("delivered", job_id, t + 1)]) == {
        "received": 2,
        "stored": 2,
    }
    delivered = job_after(job_id, "delivered")
    assert delivered.tracking[0].status == "delivered"
    post(client, [event("open", job_id, t + 60)])
    opened = job_after(job_id, "opened")
    tracking = opened.tracking[0]
    assert tracking.delivered_at is not None and tracking.opened_at is not None
    assert tracking.opened_at > tracking.delivered_at


def test_an_open_before_its_delivery_ends_opened_with_both_times(client: TestClient) -> None:
    job_id = sent_job()
    t = int(time.time())
    post(client, [event("open", job_id, t + 5), event("delivered", job_id, t)])
    job = job_after(job_id, "opened")
    time.sleep(0.3)  # the late "delivered" is applied too, and moves nothing back
    job = job_after(job_id, "opened")
    assert job.tracking[0].delivered_at is not None and job.tracking[0].opened_at is not None


def test_a_batch_delivered_twice_is_stored_once(client: TestClient) -> None:
    job_id = sent_job()
    batch = [event("delivered", job_id, int(time.time()))]
    post(client, batch)
    job_after(job_id, "delivered")
    assert post(client, batch) == {"received": 1, "stored": 0}
    assert stored_events() == 1


def test_an_event_matched_by_message_id_alone(client: TestClient) -> None:
    job_id = sent_job("sgmsg-alone")
    item = event("delivered", job_id, int(time.time()), sg_message_id="sgmsg-alone.f1.0")
    del item["email_worker_id"]
    post(client, [item])
    job_after(job_id, "delivered")


def test_an_event_that_beat_its_job_is_applied_once_the_job_is_stored(
    client: TestClient,
) -> None:
    job_id = uuid.uuid4()
    post(client, [event("delivered", job_id, int(time.time()))])
    time.sleep(0.5)  # the worker looked, found no job, left the event for later
    with primary_session() as session:
        (stored,) = session.scalars(select(EmailEvent))
        assert stored.job_id is None and stored.applied_at is None
        new_jobs.create_job(
            session,
            job_id=job_id,
            job_type="invoice",
            recipient_email="ann@example.com",
            payload={"to": ["ann@example.com"], "subject": "x", "text": "x"},
        )
    with primary_session() as session:
        send_path.mark_sent(
            session, job_id, claim_token=None, provider="sendgrid", provider_message_id="m"
        )
    assert apply_pending_events() == 1  # what beat runs
    assert job_after(job_id, "delivered").tracking[0].delivered_at is not None


def test_a_hard_bounce_suppresses_the_address_and_a_block_does_not(client: TestClient) -> None:
    job_id = sent_job()
    t = int(time.time())
    blocked = event("bounce", job_id, t, type="blocked", email="soft@example.com")
    hard = event("bounce", job_id, t + 1, type="bounce", reason="550 no such user")
    complaint = event("spamreport", job_id, t + 2, email="Angry@Example.com")
    post(client, [blocked, hard, complaint])
    job = job_after(job_id, "bounced")
    assert job.tracking[0].error_message == "bounced (hard): 550 no such user"
    with primary_session() as session:
        rows = {s.address: s.scope for s in session.scalars(select(EmailSuppression))}
    assert rows == {"ann@example.com": "all", "angry@example.com": "marketing"}


def test_a_bounce_suppresses_an_international_address_in_the_form_sends_are_checked_in(
    client: TestClient,
) -> None:
    job_id = sent_job()
    post(client, [event("bounce", job_id, int(time.time()), type="bounce", email="Bo@Bücher.de")])
    job_after(job_id, "bounced")
    with primary_session() as session:
        assert list(session.scalars(select(EmailSuppression.address))) == ["bo@xn--bcher-kva.de"]


def test_a_late_delivery_after_a_bounce_changes_nothing(client: TestClient) -> None:
    job_id = sent_job()
    t = int(time.time())
    post(client, [event("bounce", job_id, t, type="bounce")])
    job_after(job_id, "bounced")
    post(client, [event("delivered", job_id, t + 1)])
    time.sleep(0.3)
    assert job_after(job_id, "bounced").tracking[0].status == "bounced"


def test_a_batch_of_thousands_of_events_is_stored_in_one_request(client: TestClient) -> None:
    # One INSERT of 12 parameters per event could hold no more than 5,461 of them.
    t = int(time.time())
    batch = [
        {"event": "delivered", "sg_event_id": f"many-{i}", "email": f"u{i}@example.com"}
        | {"timestamp": t}
        for i in range(6_000)
    ]
    assert post(client, batch) == {"received": 6_000, "stored": 6_000}
    assert stored_events() == 6_000
    assert post(client, batch) == {"received": 6_000, "stored": 0}


def test_a_batch_of_more_events_than_one_apply_takes_is_applied_whole(
    client: TestClient,
) -> None:
    job_id = sent_job()
    t = int(time.time())
    batch = [event("open", job_id, t, sg_event_id=f"open-{i}") for i in range(3 * BATCH)]
    post(client, batch)
    deadline = time.monotonic() + 60
    while applied_events() < 3 * BATCH and time.monotonic() < deadline:
        time.sleep(0.2)
    assert applied_events() == 3 * BATCH
    assert job_after(job_id, "opened").status == "opened"


def test_a_body_above_the_limit_is_refused_with_413(client: TestClient) -> None:
    body = b"[" + b" " * webhooks.MAX_SENDGRID_BODY + b"]"
    response = client.post("/webhooks/sendgrid", content=body, headers=signed(body))
    assert response.status_code == 413 and stored_events() == 0


def test_a_request_replayed_within_the_window_is_answered_and_stores_nothing_new(
    client: TestClient,
) -> None:
    job_id = sent_job()
    body = json.dumps([event("delivered", job_id, int(time.time()))]).encode()
    headers = signed(body)
    first = client.post("/webhooks/sendgrid", content=body, headers=headers)
    assert first.json() == {"received": 1, "stored": 1}
    job_after(job_id, "delivered")
    # SendGrid's own retry of a request whose answer it lost looks the same as a replay.
    again = client.post("/webhooks/sendgrid", content=body, headers=headers)
    assert again.status_code == 200 and again.json() == {"received": 1, "stored": 0}
    assert stored_events() == 1


def test_a_batch_that_breaks_off_midway_stores_none_of_it(client: TestClient) -> None:
    t = int(time.time())
    good = ",".join(
        json.dumps({"event": "open", "sg_event_id": f"cut-{i}", "timestamp": t})
        for i in range(2_500)  # more than one chunk is read before the break
    )
    body = f"[{good}, {{broken".encode()
    response = client.post("/webhooks/sendgrid", content=body, headers=signed(body))
    assert response.status_code == 400
    assert response.json() == {"detail": "the body is not a JSON array of events"}
    assert stored_events() == 0


def test_text_postgresql_cannot_store_is_replaced_not_refused_forever(
    client: TestClient,
) -> None:
    # JSON escapes for a NUL and a lone surrogate: valid JSON, refused by PostgreSQL as is.
    body = (
        b'[{"event": "bounce", "sg_event_id": "odd-1", "email": "ann@example.com",'
        b' "type": "bounce", "reason": "550 \\ud800 \\u0000 gone \\ud83d\\ude00"}]'
    )
    response = client.post("/webhooks/sendgrid", content=body, headers=signed(body))
    assert response.status_code == 200 and response.json() == {"received": 1, "stored": 1}
    with primary_session() as session:
        (stored,) = session.scalars(select(EmailEvent))
        assert stored.payload["reason"] == "550 ?  gone \U0001f600"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(lambda body: {}, id="unsigned"),
        pytest.param(
            lambda body: signed(body, ec.generate_private_key(ec.SECP256R1())), id="forged"
        ),
        pytest.param(lambda body: signed(body, at=time.time() - 3600), id="replayed"),
        pytest.param(lambda body: signed(body, at=time.time() + 3600), id="future"),
        pytest.param(lambda body: signed(body + b" "), id="tampered"),
        pytest.param(lambda body: {**signed(body), SIGNATURE_HEADER: "not base64!"}, id="garbage"),
        pytest.param(lambda body: {**signed(body), TIMESTAMP_HEADER: "1e9"}, id="bad-timestamp"),
    ],
)
def test_a_request_not_signed_by_sendgrid_now_is_refused_and_stores_nothing(
    client: TestClient, headers: Any
) -> None:
    job_id = sent_job()
    body = json.dumps([event("delivered", job_id, int(time.time()))]).encode()
    response = client.post("/webhooks/sendgrid", content=body, headers=headers(body))
    assert response.status_code == 403
    assert stored_events() == 0


def test_without_a_configured_key_everything_is_refused(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENDGRID_WEBHOOK_PUBLIC_KEY", "")
    reset_settings()
    body = b"[]"
    assert client.post("/webhooks/sendgrid", content=body, headers=signed(body)).status_code == 403


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[" * 100_000 + b"]" * 100_000,
        b"\xff\xfe",
        b'{"event": "open"}',
        b"[1, null]",
        b'[{"event": "open"} {"event": "open"}]',
        b'[{"event": "open"}] []',
        b"[",
    ],
)
def test_hostile_bodies_never_cause_a_server_error(client: TestClient, body: bytes) -> None:
    response = client.post("/webhooks/sendgrid", content=body, headers=signed(body))
    assert response.status_code in (200, 400, 403)
    assert stored_events() == 0
