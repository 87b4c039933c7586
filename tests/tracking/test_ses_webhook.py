"""POST /webhooks/ses: SNS messages are verified (topic, certificate URL, signature) first."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

import email_worker.worker.provider_events  # noqa: F401  registers the apply task on the worker
from email_worker.config import reset_settings
from email_worker.db import job_queries, send_path
from email_worker.db.models import EmailEvent, EmailSuppression
from email_worker.db.session import primary_session
from email_worker.web import webhooks
from tests.support.jobs import stored_verification_job

pytestmark = pytest.mark.usefixtures("worker", "clean_tables")
TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-events"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-test.pem"
SUBSCRIBE_URL = "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=t"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def certificate(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


class SnsServer:
    """The HTTP boundary: what GETs to SNS URLs return, and which were made."""

    def __init__(self) -> None:
        self.documents = {CERT_URL: certificate(KEY)}
        self.fetched: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.fetched.append(url)
        return self.documents.get(url, b"<ConfirmSubscriptionResponse/>")


SNS = SnsServer()


@pytest.fixture(autouse=True)
def settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("SES_SNS_TOPIC_ARNS", TOPIC)
    reset_settings()
    SNS.fetched.clear()
    yield
    monkeypatch.undo()
    reset_settings()


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    app.include_router(webhooks.router)
    app.dependency_overrides[webhooks.sns_fetch] = lambda: SNS
    return TestClient(app)


SIGNED = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}


def sign(message: dict[str, Any], key: rsa.RSAPrivateKey = KEY, version: str = "2") -> dict:
    """Sign as SNS does: each field's name and value on lines of their own."""
    text = "".join(
        f"{name}\n{message[name]}\n" for name in SIGNED[message["Type"]] if name in message
    )
    algorithm = hashes.SHA256() if version == "2" else hashes.SHA1()
    signature = key.sign(text.encode(), padding.PKCS1v15(), algorithm)
    return {
        **message,
        "SignatureVersion": version,
        "Signature": base64.b64encode(signature).decode(),
        "SigningCertURL": message.get("SigningCertURL", CERT_URL),
    }


def notification(ses_event: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "Type": "Notification",
        "MessageId": str(uuid.uuid4()),
        "TopicArn": TOPIC,
        "Message": json.dumps(ses_event),
        "Timestamp": "2026-11-28T10:00:00.000Z",
        **fields,
    }


def ses_event(kind: str, job_id: uuid.UUID, details: dict[str, Any] | None = None) -> dict:
    key = kind[0].lower() + kind[1:]
    return {
        "eventType": kind,
        "mail": {
            "messageId": "0100-ses-1",
            "timestamp": "2026-11-28T09:59:59.000Z",
            "destination": ["ann@example.com"],
            "tags": {"email_worker_id": [str(job_id)]},
        },
        key: {"timestamp": "2026-11-28T10:00:00.000Z", **(details or {})},
    }


def post(client: TestClient, message: dict[str, Any]) -> Any:
    return client.post("/webhooks/ses", content=json.dumps(message).encode())


def sent_job() -> uuid.UUID:
    job_id = stored_verification_job()
    with primary_session() as session:
        send_path.mark_sent(
            session, job_id, claim_token=None, provider="ses", provider_message_id="m"
        )
    return job_id


def status_after(job_id: uuid.UUID, wanted: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        with primary_session() as session:
            job = job_queries.get_job(session, job_id)
        assert job is not None
        if job.status == wanted or time.monotonic() > deadline:
            return job.status
        time.sleep(0.05)


def stored_events() -> int:
    with primary_session() as session:
        return session.scalar(select(func.count()).select_from(EmailEvent)) or 0


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_signed_delivery_is_stored_and_applied(client: TestClient, version: str) -> None:
    job_id = sent_job()
    response = post(client, sign(notification(ses_event("Delivery", job_id)), version=version))
    assert response.status_code == 200 and response.json() == {"received": 1, "stored": 1}
    assert status_after(job_id, "delivered") == "delivered"
    assert SNS.fetched in ([CERT_URL], [])  # fetched once per process, then cached


def test_a_message_delivered_twice_is_stored_once(client: TestClient) -> None:
    job_id = sent_job()
    message = sign(notification(ses_event("Open", job_id)))
    assert post(client, message).json()["stored"] == 1
    assert post(client, message).json() == {"received": 1, "stored": 0}
    assert status_after(job_id, "opened") == "opened" and stored_events() == 1


def test_a_permanent_bounce_for_two_recipients_suppresses_both(client: TestClient) -> None:
    job_id = sent_job()
    details = {
        "bounceType": "Permanent",
        "bouncedRecipients": [{"emailAddress": "ann@example.com"}, {"emailAddress": "Bo@x.org"}],
    }
    response = post(client, sign(notification(ses_event("Bounce", job_id, details))))
    assert response.json() == {"received": 2, "stored": 2}
    assert status_after(job_id, "bounced") == "bounced"
    with primary_session() as session:
        rows = {s.address: (s.scope, s.source) for s in session.scalars(select(EmailSuppression))}
    assert rows == {"ann@example.com": ("all", "ses"), "bo@x.org": ("all", "ses")}


def test_a_transient_bounce_suppresses_nobody(client: TestClient) -> None:
    job_id = sent_job()
    details = {"bounceType": "Transient", "bouncedRecipients": [{"emailAddress": "a@x.org"}]}
    post(client, sign(notification(ses_event("Bounce", job_id, details))))
    assert status_after(job_id, "bounced") == "bounced"
    with primary_session() as session:
        assert list(session.scalars(select(EmailSuppression))) == []


def forged(message: dict[str, Any]) -> dict[str, Any]:
    return sign(message, key=rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(forged, id="forged"),
        pytest.param(lambda m: {**sign(m), "Message": m["Message"] + " "}, id="tampered"),
        pytest.param(
            lambda m: {k: v for k, v in sign(m).items() if k != "Signature"}, id="unsigned"
        ),
        pytest.param(lambda m: sign({**m, "TopicArn": TOPIC + "-other"}), id="wrong-topic"),
        pytest.param(lambda m: {**sign(m), "SignatureVersion": "3"}, id="unknown-version"),
        pytest.param(
            lambda m: sign({**m, "SigningCertURL": CERT_URL.replace("https", "http")}), id="http"
        ),
        pytest.param(
            lambda m: sign(
                {**m, "SigningCertURL": "https://sns.eu-west-1.amazonaws.com.evil.io/c.pem"}
            ),
            id="other-host",
        ),
        pytest.param(
            lambda m: sign(
                {**m, "SigningCertURL": "https://evil.io@sns.eu-west-1.amazonaws.com/c.pem"}
            ),
            id="userinfo",
        ),
        pytest.param(lambda m: sign({**m, "SigningCertURL": CERT_URL[:-4]}), id="not-pem"),
    ],
)
def test_a_message_not_proven_to_be_from_the_topic_is_refused(
    client: TestClient, make: Any
) -> None:
    job_id = sent_job()
    response = post(client, make(notification(ses_event("Delivery", job_id))))
    assert response.status_code == 403
    assert stored_events() == 0
    assert all(url == CERT_URL for url in SNS.fetched)


@pytest.mark.parametrize(
    "host",
    [
        "sns.us-east-1.amazonaws.com",
        "sns.ap-southeast-2.amazonaws.com",
        "sns.cn-north-1.amazonaws.com.cn",
        "sns.us-gov-west-1.amazonaws.com",
    ],
)
def test_a_signing_certificate_on_sns_of_any_region_is_used(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    url = f"https://{host}/SimpleNotificationService-test.pem"
    monkeypatch.setitem(SNS.documents, url, certificate(KEY))
    job_id = sent_job()
    response = post(client, sign(notification(ses_event("Delivery", job_id), SigningCertURL=url)))
    assert response.status_code == 200 and response.json() == {"received": 1, "stored": 1}
    assert url in SNS.fetched


@pytest.mark.parametrize(
    "netloc",
    [
        pytest.param("sns.s3.amazonaws.com", id="s3-bucket-named-sns"),
        pytest.param("sns.evil.com", id="other-domain"),
        pytest.param("sns.us-east-1.amazonaws.com.evil.com", id="suffixed"),
        pytest.param("sns.us-east-1.amazonaws.com.cn", id="china-domain-other-region"),
        pytest.param("sns.us-east-1.amazonaws.com.", id="trailing-dot"),
        pytest.param("evil.com@sns.us-east-1.amazonaws.com", id="userinfo"),
        pytest.param("sns.us-east-1.amazonaws.com@evil.com", id="host-as-userinfo"),
        pytest.param("sns.us-east-1.amazonaws.com:8443", id="port"),
        pytest.param("SNS.US-EAST-1.AMAZONAWS.COM", id="upper-case"),
    ],
)
def test_a_signing_certificate_anywhere_else_is_refused_unfetched(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, netloc: str
) -> None:
    url = f"https://{netloc}/SimpleNotificationService-test.pem"
    # The right key is served there: only the host can make the message fail.
    monkeypatch.setitem(SNS.documents, url, certificate(KEY))
    job_id = sent_job()
    response = post(client, sign(notification(ses_event("Delivery", job_id), SigningCertURL=url)))
    assert response.status_code == 403
    assert url not in SNS.fetched and stored_events() == 0


def subscription(**fields: Any) -> dict[str, Any]:
    return {
        "Type": "SubscriptionConfirmation",
        "MessageId": str(uuid.uuid4()),
        "Token": "t",
        "TopicArn": TOPIC,
        "Message": "You have chosen to subscribe to the topic.",
        "SubscribeURL": SUBSCRIBE_URL,
        "Timestamp": "2026-11-28T10:00:00.000Z",
        **fields,
    }


def test_a_valid_subscription_is_confirmed(client: TestClient) -> None:
    response = post(client, sign(subscription()))
    assert response.status_code == 200
    assert SUBSCRIBE_URL in SNS.fetched


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(lambda: forged(subscription()), id="forged"),
        pytest.param(lambda: sign(subscription(TopicArn=TOPIC + "-x")), id="wrong-topic"),
        pytest.param(
            lambda: sign(subscription(SubscribeURL="https://evil.io/?Action=Confirm")),
            id="subscribe-url-elsewhere",
        ),
    ],
)
def test_a_subscription_is_confirmed_only_when_valid(client: TestClient, message: Any) -> None:
    assert post(client, message()).status_code == 403
    assert not any("Action" in url for url in SNS.fetched)


@pytest.mark.parametrize(
    "body", [b"", b"{", b"[]", b'{"Type": 5}', b"\xff", b"[" * 50_000 + b"]" * 50_000]
)
def test_hostile_bodies_never_cause_a_server_error(client: TestClient, body: bytes) -> None:
    assert client.post("/webhooks/ses", content=body).status_code == 403
