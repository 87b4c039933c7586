"""The console's Emails pages: search, a job's timeline and its message, masked for viewers."""

from __future__ import annotations

import datetime as dt
import html
import re
import uuid

import pytest
from fastapi.testclient import TestClient

from email_worker.kinds import get_kind
from tests.conftest import DATABASE
from tests.support.jobs import wait_for_status
from tests.support.pg import wait_for_replay
from tests.support.smtp_server import SmtpServer

VERIFICATION = dict(get_kind("email_verification").sample_data)
pytestmark = pytest.mark.usefixtures("worker", "fresh_sign_in_limits")


def send_verification(to: str) -> str:
    from email_worker.tasks import send_email_verification

    result = send_email_verification.apply_async(kwargs={"to": to, "data": VERIFICATION})
    return str(result.id)


def result_ids(page: str) -> list[str]:
    return re.findall(r'href="/console/emails/([0-9a-f-]{36})"', page)


def test_a_search_by_recipient_finds_that_persons_jobs_only(
    support: TestClient, smtp: SmtpServer
) -> None:
    mine = send_verification("Ann.Lee@Example.com")
    other = send_verification("bob@example.com")
    wait_for_status(mine, "sent")
    wait_for_status(other, "sent")

    everything = support.get("/console/emails")
    assert set(result_ids(everything.text)) == {mine, other}

    found = support.get("/console/emails", params={"to": "ann.lee@example.com"})
    assert found.status_code == 200
    assert result_ids(found.text) == [mine]
    assert "<td>Ann.Lee@example.com</td>" in found.text  # support sees the whole address

    assert result_ids(support.get("/console/emails", params={"id": other}).text) == [other]
    narrowed = support.get(
        "/console/emails", params={"kind": "email_verification", "status": "failed"}
    )
    assert result_ids(narrowed.text) == [] and "No email matches." in narrowed.text
    later = support.get("/console/emails", params={"since": "2999-01-01T00:00"})
    assert result_ids(later.text) == []


def test_a_celery_task_id_that_is_no_uuid_finds_its_job(support: TestClient) -> None:
    """A worker stores a fast-path send it must retry later under its task id's job id."""
    from email_worker.db import new_jobs
    from email_worker.db.session import primary_session
    from email_worker.producer.stored_jobs import job_id_for

    task_id = f"order-{uuid.uuid4().hex[:8]}"
    job_id = str(job_id_for(task_id))
    with primary_session() as session:
        new_jobs.create_job(
            session,
            job_id=uuid.UUID(job_id),
            job_type="invoice",
            recipient_email="cy@example.com",
            payload={
                "to": ["cy@example.com"],
                "subject": "Invoice",
                "text": "x",
                "kind": "invoice",
            },
            status="scheduled",
            scheduled_at=dt.datetime(2099, 1, 1),
        )
    assert result_ids(support.get("/console/emails", params={"id": task_id}).text) == [job_id]


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ({"to": "not an address"}, "one whole email address"),
        ({"status": "lost"}, "The status must be one of"),
        ({"since": "yesterday"}, "The From time must be a date and time"),
        ({"since": "2026-12-04T10:00", "until": "2026-12-04T09:00"}, "later than"),
        ({"page": "0"}, "The page is a number"),
    ],
)
def test_a_search_it_cannot_run_says_why(
    support: TestClient, query: dict[str, str], problem: str
) -> None:
    answer = support.get("/console/emails", params=query)
    assert answer.status_code == 400
    assert problem in answer.text


def test_a_jobs_page_shows_its_timeline_provider_and_message(
    support: TestClient, smtp: SmtpServer
) -> None:
    job_id = send_verification("ann@example.com")
    job = wait_for_status(job_id, "sent")
    page = support.get(f"/console/emails/{job_id}")
    assert page.status_code == 200
    text = page.text
    assert "ann@example.com" in text
    assert "Queued" in text and "Sent" in text
    assert job.provider_message_id and html.escape(job.provider_message_id) in text
    assert "<dt>Provider</dt><dd>smtp</dd>" in text
    assert f'<iframe class="message" sandbox src="/console/emails/{job_id}/html"' in text
    assert VERIFICATION["verification_url"] in text  # the text part, rendered again

    frame = support.get(f"/console/emails/{job_id}/html")
    assert frame.status_code == 200 and frame.headers["content-type"].startswith("text/html")
    policy = frame.headers["Content-Security-Policy"]
    assert policy.startswith("default-src 'none'") and "script" not in policy
    assert "frame-ancestors 'self'" in policy
    assert VERIFICATION["verification_url"] in frame.text
    # Within the page itself, framing by anyone is refused.
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]


def test_a_failed_attempt_shows_its_error_with_addresses_masked(
    support: TestClient, smtp: SmtpServer
) -> None:
    smtp.handler.reply_next("RCPT", "550 5.1.1 <dora@example.com>: no such user")
    job_id = send_verification("dora@example.com")
    wait_for_status(job_id, "failed")
    page = support.get(f"/console/emails/{job_id}").text
    assert "Attempt 1 failed" in page
    assert "d***@example.com" in page and "no such user" in page


def test_a_viewer_sees_every_address_masked(
    viewer: TestClient, support: TestClient, smtp: SmtpServer
) -> None:
    job_id = send_verification("ann.lee@example.com")
    wait_for_status(job_id, "sent")
    for path in (
        "/console/emails",
        "/console/emails?to=ann.lee%40example.com",
        f"/console/emails/{job_id}",
        f"/console/emails/{job_id}/html",
    ):
        answer = viewer.get(path)
        assert answer.status_code == 200, path
        # Only where the viewer typed it themselves, in the search field.
        typed = 1 if "to=" in path else 0
        assert answer.text.count("ann.lee@example.com") == typed, path
    assert "a***@example.com" in viewer.get(f"/console/emails/{job_id}").text
    assert result_ids(viewer.get("/console/emails?to=ann.lee%40example.com").text) == [job_id]
    assert "ann.lee@example.com" in support.get(f"/console/emails/{job_id}").text


def test_once_personal_data_is_cleared_the_page_says_so(
    support: TestClient, smtp: SmtpServer
) -> None:
    from email_worker.db.erasure import erase_person
    from email_worker.db.session import primary_session

    job_id = send_verification("erin@example.com")
    wait_for_status(job_id, "sent")
    with primary_session() as session:
        erase_person(session, "erin@example.com", suppress=False)
    wait_for_replay(DATABASE)  # the page reads the replica
    page = support.get(f"/console/emails/{job_id}")
    assert page.status_code == 200
    assert "The message is no longer kept: its personal data was cleared" in page.text
    assert "erin@example.com" not in page.text and "<iframe" not in page.text
    assert support.get(f"/console/emails/{job_id}/html").status_code == 404


def test_an_unknown_job_is_a_404_page(support: TestClient) -> None:
    for job_id in (uuid.uuid4(), "not-a-uuid"):
        answer = support.get(f"/console/emails/{job_id}")
        assert answer.status_code == 404
        assert "There is no job with this id." in answer.text


def test_the_timeline_shows_the_providers_events(support: TestClient, smtp: SmtpServer) -> None:
    from email_worker.db.events import apply_pending, store_events
    from email_worker.db.models import utcnow
    from email_worker.db.session import primary_session
    from email_worker.tracking import events as ev

    job_id = send_verification("ann@example.com")
    job = wait_for_status(job_id, "sent")
    now = utcnow()
    happened = [
        (ev.DELIVERED, None, False),
        (ev.OPENED, None, True),
        (ev.CLICKED, None, False),
        (ev.COMPLAINED, None, False),
    ]
    with primary_session() as session:
        ids = store_events(
            session,
            [
                ev.DeliveryEvent(
                    provider="ses",
                    provider_event_id=f"{job_id}-{number}",
                    event_type=kind,
                    occurred_at=now + dt.timedelta(seconds=number),
                    recipient="ann@example.com",
                    provider_message_id=job.provider_message_id,
                    bounce_type=bounce,
                    machine_open=machine,
                )
                for number, (kind, bounce, machine) in enumerate(happened, 1)
            ],
        )
        apply_pending(session, ids)
    wait_for_replay(DATABASE)
    page = support.get(f"/console/emails/{job_id}").text
    steps = re.findall(r"<strong>([^<]+)</strong>", page.split('id="timeline-heading"')[1])
    assert steps[:6] == ["Queued", "Sent", "Delivered", "Opened", "Clicked", "Complained"]
    assert "opened by a machine (a mail privacy proxy)" in page


@pytest.mark.parametrize(
    "path",
    [
        "/console/emails?kind=%00",
        "/console/emails?kind=Bad Kind",
        "/console/emails?to=%00%40example.com",
        "/console/emails?id=%00",
        f"/console/emails?id={'x' * 300}",
        "/console/emails?since=%00&until=9999-99-99",
        "/console/emails?page=-1",
        "/console/emails/%00",
        "/console/emails/%00/html",
        "/console/emails/%00/resend",
        "/console/bulk?id=%00",
        "/console/bulk/not-a-uuid",
        "/console/suppressions/%00/remove",
        f"/console/suppressions/{'f' * 64}/remove",
    ],
)
def test_odd_input_gets_a_clear_answer_never_a_server_error(support: TestClient, path: str) -> None:
    answer = support.get(path)
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[-300:])
    assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]


def test_a_jobs_page_names_its_queue_and_its_rendered_subject(support: TestClient) -> None:
    """A high-priority job (stored as priority 0) reads as high, not as the default queue;
    a template send's subject is the one its template renders."""
    from email_worker.db import new_jobs
    from email_worker.db.session import primary_session

    job_id = uuid.uuid4()
    with primary_session() as session:
        new_jobs.create_job(
            session,
            job_id=job_id,
            job_type="email_verification",
            recipient_email="hi@example.com",
            payload={
                "to": ["hi@example.com"],
                "template_id": "email_verification",
                "data": VERIFICATION,
                "kind": "email_verification",
            },
            template_id="email_verification",
            priority=0,
            status="scheduled",
            scheduled_at=dt.datetime(2099, 1, 1),
        )
    page = html.unescape(support.get(f"/console/emails/{job_id}").text)
    assert re.search(r"<dt>Priority</dt><dd>high</dd>", page)
    subject = re.search(r"<dt>Subject</dt><dd>([^<]*)</dd>", page)
    assert subject and subject.group(1).strip(), "the subject row shows the rendered subject"
    assert "to be sent later" in page
