"""Failover between real providers: a local SendGrid stand-in, aiosmtpd, the outbox."""

from __future__ import annotations

import base64
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from email_worker.config import Secret, Settings
from email_worker.errors import (
    PermanentProviderError,
    ProvidersUnavailable,
    RateLimitedError,
    Throttled,
)
from email_worker.kinds import GENERIC
from email_worker.mime.messages import OutgoingEmail, Sender, build_message
from email_worker.producer.validation import validate_request
from email_worker.providers.base import Provider
from email_worker.providers.failover import providers_health, send_through
from email_worker.providers.outbox import OutboxProvider
from email_worker.providers.sendgrid import SendGridProvider
from email_worker.providers.smtp import SmtpProvider
from email_worker.rendering.renderer import render_inline
from tests.fakes.sendgrid_api import FakeSendGrid
from tests.support.smtp_server import SmtpServer


def outgoing(key: str = "") -> OutgoingEmail:
    request = validate_request(
        GENERIC,
        {"to": "ann@example.com", "subject": "Your receipt", "text": "Thank you."},
        template_exists=lambda t: True,
    )
    return build_message(
        request,
        render_inline("Your receipt", None, "Thank you."),
        sender=Sender("noreply@mail.example.com", "Example"),
        message_key=key or uuid.uuid4().hex,
    )


@pytest.fixture
def sendgrid_api() -> Iterator[FakeSendGrid]:
    with FakeSendGrid() as api:
        yield api


@pytest.fixture
def providers(
    sendgrid_api: FakeSendGrid, smtp: SmtpServer, tmp_path: Path
) -> Iterator[dict[str, Provider]]:
    found: dict[str, Provider] = {
        "sendgrid": SendGridProvider("SG.test-key", api_url=sendgrid_api.url, timeout=2),
        "smtp": SmtpProvider("127.0.0.1", smtp.port, security="none", timeout=2),
        "outbox": OutboxProvider(str(tmp_path / "outbox")),
    }
    yield found
    for provider in found.values():
        provider.close()


@pytest.fixture
def settings(redis_client: redis.Redis) -> Iterator[Settings]:
    """Settings whose circuits and rate limits are this test's own (a fresh queue name)."""
    name = f"failover-{uuid.uuid4().hex[:8]}"
    yield Settings(redis_host="127.0.0.1", queue_name=name, circuit_failures=2, circuit_reset=30)
    for key in redis_client.scan_iter(f"email-worker:*{name}*"):
        redis_client.delete(key)


def test_a_transient_failure_moves_the_send_to_the_next_provider(
    providers: dict[str, Provider],
    sendgrid_api: FakeSendGrid,
    smtp: SmtpServer,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sendgrid_api.reply(500, {"errors": [{"message": "internal error"}]})
    email = outgoing()
    with caplog.at_level(logging.INFO, "email_worker.providers"):
        name, result = send_through(
            email, ("sendgrid", "smtp"), settings, provider_for=providers.__getitem__
        )
    assert name == "smtp"
    assert result.message_id == email.message_id
    assert len(smtp.wait_for(1)) == 1
    assert len(sendgrid_api.requests) == 1
    lines = [r.getMessage() for r in caplog.records]
    assert "provider failed for now; trying the next one" in lines
    assert "sent through a fallback provider" in lines


def test_a_permanent_refusal_does_not_fail_over(
    providers: dict[str, Provider],
    sendgrid_api: FakeSendGrid,
    smtp: SmtpServer,
    settings: Settings,
) -> None:
    sendgrid_api.reply(400, {"errors": [{"message": "The subject is too long"}]})
    with pytest.raises(PermanentProviderError, match="subject is too long"):
        send_through(outgoing(), ("sendgrid", "smtp"), settings, provider_for=providers.__getitem__)
    assert smtp.received == []


def test_an_open_circuit_skips_the_provider_without_calling_it(
    providers: dict[str, Provider],
    sendgrid_api: FakeSendGrid,
    smtp: SmtpServer,
    settings: Settings,
) -> None:
    sendgrid_api.reply(503, {"errors": [{"message": "unavailable"}]}, times=2)
    for _ in range(2):  # two failures in a row open the circuit (circuit_failures=2)
        send_through(outgoing(), ("sendgrid", "smtp"), settings, provider_for=providers.__getitem__)
    name, _ = send_through(
        outgoing(), ("sendgrid", "smtp"), settings, provider_for=providers.__getitem__
    )
    assert name == "smtp"
    assert len(sendgrid_api.requests) == 2  # the third send never reached SendGrid
    assert len(smtp.wait_for(3)) == 3
    health = providers_health(
        Settings(
            redis_host="127.0.0.1",
            email_provider="sendgrid",
            email_provider_fallbacks=("smtp",),
            sendgrid_api_key=Secret("SG.test-key"),
            smtp_host="127.0.0.1",
            circuit_failures=2,
            circuit_reset=30,
            queue_name=settings.queue_name,
        )
    )
    assert health["sendgrid"]["configured"] is True
    assert health["sendgrid"]["state"] == "open"
    assert "503" in health["sendgrid"]["last_error"] or "unavailable" in str(health["sendgrid"])
    assert health["smtp"]["state"] == "closed"


def test_when_every_provider_fails_the_send_is_retried_later(
    providers: dict[str, Provider],
    sendgrid_api: FakeSendGrid,
    smtp: SmtpServer,
    settings: Settings,
) -> None:
    sendgrid_api.reply(500, {"errors": [{"message": "internal error"}]})
    smtp.handler.reply_next("MAIL", "451 4.3.0 try again later")
    with pytest.raises(ProvidersUnavailable) as caught:
        send_through(outgoing(), ("sendgrid", "smtp"), settings, provider_for=providers.__getitem__)
    assert "sendgrid" in str(caught.value) and "smtp" in str(caught.value)


def test_a_provider_rate_limit_with_no_fallback_waits_for_its_reset(
    providers: dict[str, Provider], sendgrid_api: FakeSendGrid, settings: Settings
) -> None:
    sendgrid_api.reply(
        429, {"errors": [{"message": "too many"}]}, headers={"X-RateLimit-Reset": "0"}
    )
    with pytest.raises(RateLimitedError) as caught:
        send_through(outgoing(), ("sendgrid",), settings, provider_for=providers.__getitem__)
    assert caught.value.retry_after >= 1


def test_our_rate_limit_books_a_token_instead_of_failing_over(
    providers: dict[str, Provider], smtp: SmtpServer, settings: Settings
) -> None:
    limited = Settings(redis_host="127.0.0.1", smtp_rate_limit=2.0, queue_name=settings.queue_name)
    sent = [
        send_through(outgoing(f"k{i}"), ("smtp", "outbox"), limited, provider_for=providers.get)
        for i in range(1)
    ]
    assert sent[0][0] == "smtp"
    with pytest.raises(Throttled) as caught:
        send_through(outgoing("k1"), ("smtp", "outbox"), limited, provider_for=providers.get)
    assert 0 < caught.value.retry_after <= 0.6
    assert len(smtp.wait_for(1)) == 1  # nothing went to the outbox instead
    assert not (Path(providers["outbox"].directory)).exists()  # type: ignore[attr-defined]


def test_smtp_messages_are_signed_with_dkim_when_configured(
    providers: dict[str, Provider], smtp: SmtpServer, tmp_path: Path
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing = Settings(
        redis_host="127.0.0.1",
        dkim_domain="mail.example.com",
        dkim_selector="s2026",
        dkim_private_key=Secret(pem),
    )
    send_through(outgoing(), ("smtp",), signing, provider_for=providers.__getitem__)
    (received,) = smtp.wait_for(1)
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return record if name == b"s2026._domainkey.mail.example.com." else b""

    assert received.raw.startswith(b"DKIM-Signature:")
    assert dkim.verify(received.raw, dnsfunc=dns)
