"""A producer's from_email must be an allowed sender: refused before anything is queued."""

from __future__ import annotations

import pytest

from email_worker.config import Settings, SettingsError, load_settings
from email_worker.errors import InvalidEmailRequest
from email_worker.kinds import GENERIC
from email_worker.mime.email_request import EmailRequest
from email_worker.producer.validation import allowed_senders, validate_request
from tests.conftest import purge_queues, queue_length
from tests.support.smtp_server import SmtpServer


def send_from(from_email: str, **settings: object) -> EmailRequest:
    """Validate an inline email from ``from_email`` against the given settings."""
    senders = allowed_senders(Settings(**settings))  # type: ignore[arg-type]
    return validate_request(
        GENERIC,
        {"to": "ann@example.com", "subject": "Hi", "text": "x", "from_email": from_email},
        template_exists=lambda t: True,
        senders=senders,
    )


@pytest.mark.parametrize(
    ("entries", "from_email"),
    [
        (("noreply@example.com",), "noreply@example.com"),
        (("noreply@example.com",), "NoReply@Example.COM"),
        (("NOREPLY@EXAMPLE.COM",), "noreply@example.com"),
        (("example.com",), "billing@example.com"),
        (("Example.COM",), "billing@example.com"),
        (("@example.com",), "billing@example.com"),
        ((".example.com",), "billing@mail.example.com"),
        ((".example.com",), "billing@eu.mail.example.com"),
        (("bücher.example",), "info@bücher.example"),
        (("bücher.example",), "info@xn--bcher-kva.example"),
        (("xn--bcher-kva.example",), "info@BÜCHER.example"),
        (("other.example", "example.com"), "billing@example.com"),
    ],
)
def test_an_allowed_sender_is_accepted(entries: tuple[str, ...], from_email: str) -> None:
    request = send_from(from_email, allowed_from_domains=entries)
    assert request.from_email is not None
    assert request.from_email.lower() == from_email.lower().replace("bücher", "xn--bcher-kva")


@pytest.mark.parametrize(
    ("entries", "from_email"),
    [
        (("noreply@example.com",), "billing@example.com"),
        (("example.com",), "billing@mail.example.com"),
        (("example.com",), "billing@notexample.com"),
        (("example.com",), "billing@example.com.evil.example"),
        ((".example.com",), "billing@example.com"),
        ((".example.com",), "billing@badexample.com"),
        (("bücher.example",), "info@bucher.example"),
    ],
)
def test_any_other_sender_is_refused(entries: tuple[str, ...], from_email: str) -> None:
    with pytest.raises(InvalidEmailRequest) as caught:
        send_from(from_email, allowed_from_domains=entries)
    assert caught.value.field == "from_email"
    assert "is not an allowed sender; see ALLOWED_FROM_DOMAINS" in str(caught.value)
    assert from_email not in str(caught.value)  # masked: errors get logged


def test_without_a_list_email_from_and_its_domain_are_allowed() -> None:
    own = {"email_from": "noreply@mail.example.com"}
    assert send_from("noreply@mail.example.com", **own).from_email == "noreply@mail.example.com"
    assert send_from("billing@mail.example.com", **own).from_email == "billing@mail.example.com"
    for other in ("billing@example.com", "billing@eu.mail.example.com", "x@evil.example"):
        with pytest.raises(InvalidEmailRequest, match="not an allowed sender"):
            send_from(other, **own)


def test_a_list_replaces_the_email_from_default() -> None:
    settings = {"email_from": "noreply@mail.example.com", "allowed_from_domains": ("example.org",)}
    assert send_from("team@example.org", **settings).from_email == "team@example.org"
    with pytest.raises(InvalidEmailRequest, match="not an allowed sender"):
        send_from("billing@mail.example.com", **settings)


def test_a_request_without_from_email_needs_no_list() -> None:
    request = validate_request(
        GENERIC,
        {"to": "ann@example.com", "subject": "Hi", "text": "x"},
        template_exists=lambda t: True,
        senders=allowed_senders(Settings(allowed_from_domains=("example.org",))),
    )
    assert request.from_email is None


def test_the_list_is_read_from_the_environment() -> None:
    settings = load_settings({"ALLOWED_FROM_DOMAINS": "noreply@example.com, .example.org"})
    senders = allowed_senders(settings)
    assert senders.allows("noreply@example.com") and senders.allows("a@eu.example.org")
    assert not senders.allows("a@example.org") and not senders.allows("other@example.com")


@pytest.mark.parametrize("entry", ["not a domain", "a@@example.com", ".", "@", "exa mple.com"])
def test_a_malformed_entry_is_a_settings_error_naming_its_position(entry: str) -> None:
    with pytest.raises(SettingsError) as caught:  # at start-up, not at the first send
        Settings(allowed_from_domains=("example.com", entry))
    assert str(caught.value) == (
        "ALLOWED_FROM_DOMAINS: entry 2 is not an address, a domain or a .parent.domain"
    )


# In the producer's process, and again in the worker.


def test_the_producer_refuses_and_queues_nothing(redis_client, celery_app) -> None:  # type: ignore[no-untyped-def]
    from email_worker.tasks import send_email

    purge_queues(redis_client)
    kwargs = {"to": "ann@example.com", "subject": "Hi", "text": "x"}
    with pytest.raises(InvalidEmailRequest, match="not an allowed sender") as caught:
        send_email.apply_async(kwargs={**kwargs, "from_email": "ceo@elsewhere.example"})
    assert caught.value.field == "from_email"
    with pytest.raises(InvalidEmailRequest, match="not an allowed sender"):
        send_email.apply_async(
            kwargs={**kwargs, "from_email": "x@elsewhere.example", "tracked": True}
        )
    assert sum(queue_length(redis_client, p) for p in ("high", "default", "low")) == 0


@pytest.mark.usefixtures("worker")
def test_the_worker_refuses_a_sender_published_without_this_package(
    smtp: SmtpServer,
    celery_app,  # type: ignore[no-untyped-def]
) -> None:
    from celery import Celery

    foreign = Celery(broker=celery_app.conf.broker_url, backend=celery_app.conf.result_backend)
    result = foreign.send_task(
        "email_worker.send_email",
        kwargs={
            "to": "ann@example.com",
            "subject": "Hi",
            "text": "x",
            "from_email": "ceo@elsewhere.example",
        },
        queue=celery_app.conf.task_default_queue,
        ignore_result=False,
    )
    with pytest.raises(Exception, match="from_email: c\\*\\*\\*@elsewhere.example is not an"):
        result.get(timeout=20)
    assert smtp.received == []
