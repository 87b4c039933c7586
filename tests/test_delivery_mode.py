"""DELIVERY_MODE decides who gets an email now and whose copy is held in the outbox."""

from __future__ import annotations

import pytest

from email_worker.config import Settings, SettingsError, load_settings
from email_worker.mime.content import RenderedEmail
from email_worker.mime.email_request import EmailRequest
from email_worker.mime.messages import OutgoingEmail, Sender, build_message
from email_worker.policy.delivery_mode import allowed_recipients, recipient_allowed, split_by_mode

SENDER = Sender("noreply@mail.example.com", "Example Bookings")


def email_to(to: list[str], cc: list[str] = [], bcc: list[str] = []) -> OutgoingEmail:  # noqa: B006
    request = EmailRequest(kind="email", to=to, cc=cc, bcc=bcc)
    return build_message(request, RenderedEmail(subject="Hi", text="x"), sender=SENDER)


def allowlist(*entries: str) -> Settings:
    return Settings(delivery_mode="allowlist", allowed_recipients=entries)


@pytest.mark.parametrize(
    ("address", "allowed", "expected"),
    [
        ("qa@example.com", ["qa@example.com"], True),
        ("QA@Example.COM", ["qa@example.com"], True),
        ("qa@example.com", ["QA@EXAMPLE.COM"], True),
        ("dev@example.com", ["qa@example.com"], False),
        ("anyone@example.com", ["@example.com"], True),
        ("anyone@EXAMPLE.com", ["@Example.Com"], True),
        ("anyone@mail.example.com", ["@example.com"], False),
        ("anyone@notexample.com", ["@example.com"], False),
        ("anyone@example.com.evil.example", ["@example.com"], False),
        ("qa@xn--bcher-kva.example", ["@bücher.example"], True),
        ("qa@bücher.example", ["@xn--bcher-kva.example"], True),
        ("qa@xn--bcher-kva.example", ["qa@bücher.example"], True),
        ("qa@bucher.example", ["@bücher.example"], False),
        # A non-ASCII local part: the envelope keeps the domain in ASCII all the same.
        ("zoë@xn--bcher-kva.example", ["zoë@bücher.example"], True),
        ("ZOË@BÜCHER.example", ["zoë@xn--bcher-kva.example"], True),
        ("zoë@bücher.example", ["@xn--bcher-kva.example"], True),
        ("qa@example.com", [], False),
        ("qa@example.com", ["dev@example.org", "@example.com"], True),
    ],
)
def test_recipient_allowed(address: str, allowed: list[str], expected: bool) -> None:
    assert recipient_allowed(address, allowed) is expected


@pytest.mark.parametrize("entry", ["example.com", "qa@", "@", "not an address", "@exa mple.com"])
def test_a_malformed_entry_is_refused_naming_its_position(entry: str) -> None:
    with pytest.raises(ValueError, match="ALLOWED_RECIPIENTS: entry 2 is neither"):
        allowed_recipients(("qa@example.com", entry))


def test_live_sends_everything() -> None:
    email = email_to(["ann@customer.example"], bcc=["audit@example.com"])
    assert split_by_mode(email, Settings(delivery_mode="live")) == (email, None)


def test_outbox_holds_everything() -> None:
    email = email_to(["qa@example.com"])
    settings = Settings(delivery_mode="outbox", allowed_recipients=("qa@example.com",))
    assert split_by_mode(email, settings) == (None, email)


def test_allowlist_splits_the_envelope_and_keeps_the_message() -> None:
    email = email_to(
        ["ann@customer.example", "QA@Example.com"],
        cc=["dev@team.example.com"],
        bcc=["audit@example.com", "spy@customer.example"],
    )
    live, held = split_by_mode(email, allowlist("@example.com", "dev@team.example.com"))
    assert live is not None and held is not None
    assert live.envelope.recipients == (
        "QA@Example.com",
        "dev@team.example.com",
        "audit@example.com",
    )
    assert held.envelope.recipients == ("ann@customer.example", "spy@customer.example")
    assert live.as_bytes() == held.as_bytes() == email.as_bytes()
    assert live.envelope.sender == held.envelope.sender == email.envelope.sender
    assert live.message_id == held.message_id == email.message_id
    assert live.parts == held.parts == email.parts
    assert b"audit@" not in live.as_bytes()  # a Bcc recipient is still only in the envelope


def test_allowlist_with_everyone_allowed_sends_the_email_as_it_is() -> None:
    email = email_to(["qa@example.com"], bcc=["dev@example.com"])
    live, held = split_by_mode(email, allowlist("@example.com"))
    assert live is email and held is None


def test_allowlist_with_no_one_allowed_holds_the_email_as_it_is() -> None:
    email = email_to(["ann@customer.example"], cc=["bob@customer.example"])
    live, held = split_by_mode(email, allowlist("@example.com"))
    assert live is None and held is email


def test_a_bcc_outside_the_list_is_held() -> None:
    email = email_to(["qa@example.com"], bcc=["ann@customer.example"])
    live, held = split_by_mode(email, allowlist("qa@example.com"))
    assert live is not None and held is not None
    assert live.envelope.recipients == ("qa@example.com",)
    assert held.envelope.recipients == ("ann@customer.example",)


def test_staging_is_configured_from_the_environment() -> None:
    settings = load_settings(
        {"DELIVERY_MODE": "allowlist", "ALLOWED_RECIPIENTS": "@yourcompany.com, qa@partner.example"}
    )
    email = email_to(["ann@customer.example", "lee@yourcompany.com", "qa@partner.example"])
    live, held = split_by_mode(email, settings)
    assert live is not None and held is not None
    assert live.envelope.recipients == ("lee@yourcompany.com", "qa@partner.example")
    assert held.envelope.recipients == ("ann@customer.example",)


def test_allowlist_without_recipients_does_not_start() -> None:
    with pytest.raises(SettingsError, match="ALLOWED_RECIPIENTS is required"):
        load_settings({"DELIVERY_MODE": "allowlist"}).validate()
