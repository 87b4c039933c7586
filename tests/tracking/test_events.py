"""SendGrid and SES events in one vocabulary: what each provider event becomes."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from email_worker.tracking import events as ev

NOW = dt.datetime(2026, 1, 2, 3, 4, 5)
JOB = uuid.uuid4()


def sendgrid(event: str, **fields: object) -> dict[str, object]:
    return {
        "event": event,
        "sg_event_id": f"evt-{event}",
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
        "email": "Ann@Example.com",
        "timestamp": 1767323045,
        "email_worker_id": str(JOB),
        **fields,
    }


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("processed", ev.QUEUED),
        ("dropped", ev.DROPPED),
        ("delivered", ev.DELIVERED),
        ("deferred", ev.DEFERRED),
        ("bounce", ev.BOUNCED),
        ("open", ev.OPENED),
        ("click", ev.CLICKED),
        ("spamreport", ev.COMPLAINED),
        ("unsubscribe", ev.UNSUBSCRIBED),
        ("group_unsubscribe", ev.UNSUBSCRIBED),
    ],
)
def test_each_sendgrid_event_has_its_name(name: str, expected: str) -> None:
    (event,) = ev.sendgrid_events([sendgrid(name)], NOW)
    assert event.event_type == expected and event.provider == ev.SENDGRID
    assert event.provider_event_id == f"evt-{name}"
    assert event.provider_message_id == "14c5d75ce93"  # the X-Message-Id the send returned
    assert event.recipient == "ann@example.com"
    assert event.occurred_at == dt.datetime(2026, 1, 2, 3, 4, 5)
    assert ev.our_id(ev.SENDGRID, event.payload) == JOB


def test_a_sendgrid_bounce_is_hard_and_a_block_is_soft() -> None:
    hard, soft = ev.sendgrid_events(
        [sendgrid("bounce", type="bounce"), sendgrid("bounce", type="blocked", sg_event_id="b")],
        NOW,
    )
    assert (hard.bounce_type, soft.bounce_type) == (ev.HARD, ev.SOFT)


def test_machine_opens_are_marked() -> None:
    (event,) = ev.sendgrid_events([sendgrid("open", sg_machine_open=True)], NOW)
    assert event.machine_open is True


def test_unknown_or_malformed_sendgrid_events_are_skipped() -> None:
    batch = [
        sendgrid("group_resubscribe"),
        {"event": "delivered"},  # no sg_event_id
        sendgrid("delivered", sg_event_id="x" * 300),
        "not an object",
        sendgrid("delivered", sg_event_id="ok", timestamp=10**20, email=["x"]),
    ]
    (event,) = ev.sendgrid_events(batch, NOW)
    assert event.provider_event_id == "ok"
    assert event.occurred_at == NOW and event.recipient is None
    assert ev.sendgrid_events({"not": "a list"}, NOW) == []


def test_nul_characters_never_reach_the_stored_payload() -> None:
    (event,) = ev.sendgrid_events([sendgrid("delivered", response="250\x00 ok")], NOW)
    assert event.payload["response"] == "250 ok"


def ses(kind: str, details: dict[str, object] | None = None, **mail: object) -> dict[str, object]:
    key = {"Rendering Failure": "failure"}.get(kind, kind[0].lower() + kind[1:])
    return {
        "eventType": kind,
        "mail": {
            "messageId": "0100-ses-id",
            "timestamp": "2026-01-02T03:04:05.000Z",
            "destination": ["ann@example.com"],
            "tags": {"email_worker_id": [str(JOB)], "kind": ["email_verification"]},
            **mail,
        },
        key: details or {},
    }


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("Send", ev.SENT),
        ("Delivery", ev.DELIVERED),
        ("Bounce", ev.BOUNCED),
        ("Complaint", ev.COMPLAINED),
        ("Reject", ev.REJECTED),
        ("Open", ev.OPENED),
        ("Click", ev.CLICKED),
        ("DeliveryDelay", ev.DEFERRED),
        ("Rendering Failure", ev.REJECTED),
    ],
)
def test_each_ses_event_has_its_name(kind: str, expected: str) -> None:
    (event,) = ev.ses_events(ses(kind), "sns-1", NOW)
    assert event.event_type == expected and event.provider == ev.SES
    assert event.provider_event_id == "sns-1" and event.provider_message_id == "0100-ses-id"
    assert event.recipient == "ann@example.com"
    assert event.occurred_at == dt.datetime(2026, 1, 2, 3, 4, 5)
    assert ev.our_id(ev.SES, event.payload) == JOB


@pytest.mark.parametrize(
    ("bounce_type", "expected"),
    [("Permanent", ev.HARD), ("Transient", ev.SOFT), ("Undetermined", ev.SOFT)],
)
def test_ses_bounce_types(bounce_type: str, expected: str) -> None:
    details = {"bounceType": bounce_type, "bouncedRecipients": [{"emailAddress": "a@x.org"}]}
    (event,) = ev.ses_events(ses("Bounce", details), "sns-1", NOW)
    assert event.bounce_type == expected


def test_an_ses_event_for_several_recipients_is_one_event_each() -> None:
    details = {
        "bounceType": "Permanent",
        "timestamp": "2026-01-02T03:05:00Z",
        "bouncedRecipients": [{"emailAddress": "a@x.org"}, {"emailAddress": "B@x.org"}],
    }
    first, second = ev.ses_events(ses("Bounce", details), "sns-1", NOW)
    assert [first.recipient, second.recipient] == ["a@x.org", "b@x.org"]
    assert [first.provider_event_id, second.provider_event_id] == ["sns-1#0", "sns-1#1"]
    assert first.occurred_at == dt.datetime(2026, 1, 2, 3, 5)


def test_ses_notifications_and_unknown_types() -> None:
    notification = ses("Delivery")
    notification["notificationType"] = notification.pop("eventType")
    assert [e.event_type for e in ev.ses_events(notification, "n", NOW)] == [ev.DELIVERED]
    assert ev.ses_events(ses("Subscription"), "n", NOW) == []
    assert ev.ses_events({"eventType": "Delivery", "mail": "x"}, "n", NOW) == []
    assert ev.ses_events([1, 2], "n", NOW) == []


def test_reasons_are_read_from_the_stored_payload() -> None:
    bounce = {"bounceType": "Permanent", "bouncedRecipients": [{"diagnosticCode": "550 no"}]}
    assert ev.reason_of(ev.SES, ses("Bounce", bounce)) == "550 no"
    assert ev.reason_of(ev.SENDGRID, sendgrid("dropped", reason="Bounced Address")) == (
        "Bounced Address"
    )
