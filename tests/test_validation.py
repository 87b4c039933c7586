"""A bad request is refused with an error that names the field; a good one is normalised."""

from __future__ import annotations

import pytest

from email_worker.errors import InvalidEmailRequest
from email_worker.kinds import GENERIC, get_kind, queue_priority
from email_worker.validation import MAX_RECIPIENTS, validate_request

WELCOME = get_kind("welcome_email")


def check(kind=GENERIC, /, **kwargs):  # type: ignore[no-untyped-def]
    return validate_request(kind, kwargs, template_exists=lambda t: t != "missing")


def test_a_kind_task_takes_to_and_data() -> None:
    request = check(WELCOME, to="ann@example.com", data={"user_name": "Ann"})
    assert request.to == ["ann@example.com"]
    assert request.template_id == "welcome_email"
    assert request.priority == "default" and request.tracked is False


def test_idn_domains_become_ascii() -> None:
    request = check(to="ann@bücher.example", subject="Hi", text="x")
    assert request.to == ["ann@xn--bcher-kva.example"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"to": "not-an-address", "subject": "s", "text": "t"}, "to"),
        ({"to": ["a@example.com", "nope"], "subject": "s", "text": "t"}, "to[1]"),
        ({"to": "a@example.com\r\nBcc: x@evil.example", "subject": "s", "text": "t"}, "to"),
        ({"to": "a@example.com", "subject": "Hi\r\nBcc: x@evil.example", "text": "t"}, "subject"),
        ({"to": "a@example.com", "subject": "s", "text": "t", "from_name": "A\nB"}, "from_name"),
        (
            {"to": "a@example.com", "subject": "s", "text": "t", "headers": {"X-A": "1\r\n2"}},
            "headers.X-A",
        ),
        (
            {"to": "a@example.com", "subject": "s", "text": "t", "headers": {"Bad Name": "1"}},
            "headers",
        ),
        (
            {"to": "a@example.com", "subject": "s", "text": "t", "headers": {"Bcc": "x@e.example"}},
            "headers.Bcc",
        ),
        ({"to": "a@example.com", "template_id": "missing"}, "template_id"),
        ({"to": "a@example.com", "template_id": "../etc/passwd"}, "template_id"),
        ({"to": "a@example.com"}, "template_id"),
        ({"to": "a@example.com", "subject": "s"}, "html"),
        ({"to": "a@example.com", "template_id": "x", "subject": "s"}, "template_id"),
        ({"to": "a@example.com", "subject": "s", "text": "t", "priority": "urgent"}, "priority"),
        ({"to": "a@example.com", "subject": "s", "text": "t", "priority": 12}, "priority"),
        ({"to": "a@example.com", "subject": "s", "text": "t", "data": {"a": object()}}, "data"),
        ({"to": "a@example.com", "subject": "s", "text": "t", "tracked": "yes"}, "tracked"),
        ({"to": "a@example.com", "subject": "s", "text": "t", "provider": "pigeon"}, "provider"),
        ({"to": "a@example.com", "subject": "s", "text": "t", "templte_id": "x"}, "templte_id"),
        ({"to": [], "subject": "s", "text": "t"}, "to"),
        ({"to": "a@example.com", "subject": "s\x1cX", "text": "t"}, "subject"),
        (
            {"to": "a@example.com", "subject": "s", "text": "t", "headers": {"X-A": "1\u2028"}},
            "headers.X-A",
        ),
        ({"to": "a@example.com", "subject": "s", "text": "t", "kind": "payment_receipt"}, "kind"),
        ({"to": "a@example.com", "subject": "s", "text": "t", "data": {"a": "\x00"}}, "data"),
        (
            {
                "to": "a@example.com",
                "subject": "s",
                "text": "t",
                "only_recipients": ["b@example.com"],
            },
            "only_recipients",
        ),
    ],
)
def test_bad_requests_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidEmailRequest) as caught:
        check(**kwargs)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_recipient_limit() -> None:
    many = [f"user{i}@example.com" for i in range(MAX_RECIPIENTS + 1)]
    with pytest.raises(InvalidEmailRequest, match="at most"):
        check(to=many, subject="s", text="t")


def test_kind_tasks_use_their_own_template() -> None:
    with pytest.raises(InvalidEmailRequest, match="template_id"):
        check(WELCOME, to="a@example.com", template_id="password_reset")


def test_recipients_are_deduplicated_for_the_envelope() -> None:
    request = check(
        to=["a@example.com", "b@example.com"],
        cc="A@example.com",
        bcc="c@example.com",
        subject="s",
        text="t",
    )
    assert request.recipients == ["a@example.com", "b@example.com", "c@example.com"]


@pytest.mark.parametrize(
    ("priority", "queue"),
    [
        ("high", "high"),
        ("normal", "default"),
        ("low", "low"),
        (0, "high"),
        (2, "high"),
        (3, "default"),
        (6, "default"),
        (7, "low"),
        (9, "low"),
    ],
)
def test_priority_mapping(priority: str | int, queue: str) -> None:
    assert queue_priority(priority) == queue


def test_payload_round_trips() -> None:
    request = check(to="a@example.com", subject="s", html="<p>x</p>", metadata={"order": 7})
    again = check(**request.to_payload())
    assert again == request
