"""The console's actions: confirmed, CSRF-checked, refused to viewers, and audited."""

from __future__ import annotations

import re
import uuid

import pytest
from fastapi.testclient import TestClient

from email_worker.kinds import get_kind
from tests.conftest import DATABASE
from tests.support.console import (
    audit_lines,
    csrf_token,
    make_user,
    sign_in,
)
from tests.support.jobs import stored, wait_for_status
from tests.support.pg import wait_for_replay
from tests.support.smtp_server import SmtpServer
from tests.support.web import web_app

VERIFICATION = dict(get_kind("email_verification").sample_data)
NEWSLETTER = dict(get_kind("newsletter").sample_data)
pytestmark = pytest.mark.usefixtures("worker", "fresh_sign_in_limits")


def confirm_form(client: TestClient, page: str) -> tuple[str, dict[str, str]]:
    """The form of a confirmation page: where it posts, and its fields."""
    answer = client.get(page)
    assert answer.status_code == 200, answer.text
    action = re.search(r'<form method="post" action="([^"]+)"', answer.text)
    assert action is not None
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', answer.text))
    return action.group(1), fields


def failed_verification(smtp: SmtpServer, to: str = "ann@example.com") -> str:
    from email_worker.tasks import send_email_verification

    smtp.handler.reply_next("RCPT", "550 5.1.1 mailbox unavailable")
    result = send_email_verification.apply_async(kwargs={"to": to, "data": VERIFICATION})
    wait_for_status(result.id, "failed")
    assert smtp.received == []
    return str(result.id)


def scheduled_verification() -> str:
    from email_worker.tasks import send_email_verification

    result = send_email_verification.apply_async(
        kwargs={"to": "ann@example.com", "data": VERIFICATION}, countdown=3600
    )
    wait_for_status(result.id, "scheduled")
    return str(result.id)


def test_a_resent_email_reaches_the_smtp_server_as_a_new_job(
    support: TestClient, smtp: SmtpServer
) -> None:
    original = failed_verification(smtp)
    page = support.get(f"/console/emails/{original}").text
    assert f'href="/console/emails/{original}/resend"' in page

    action, fields = confirm_form(support, f"/console/emails/{original}/resend")
    assert action == f"/console/emails/{original}/resend"
    done = support.post(action, data=fields, follow_redirects=False)
    assert done.status_code == 303
    found = re.fullmatch(r"/console/emails/([0-9a-f-]{36})\?done=resent", done.headers["location"])
    assert found is not None
    resent = found.group(1)
    assert resent != original

    wait_for_status(resent, "sent")
    (received,) = smtp.wait_for(1)
    assert received.recipients == ["ann@example.com"]
    assert received.message["Message-ID"] == f"<{resent}@mail.example.com>"
    assert stored(original).status == "failed"  # the original stays as it was

    new_page = support.get(done.headers["location"]).text
    assert "The email was resent as a new job." in new_page
    assert f'Resend of</dt><dd><a href="/console/emails/{original}"' in new_page
    assert f'href="/console/emails/{resent}"' in support.get(f"/console/emails/{original}").text
    assert ("console:sam", "job.resend", f"{original} -> {resent}") in audit_lines()


def test_only_a_failed_or_bounced_email_can_be_resent(
    support: TestClient, smtp: SmtpServer
) -> None:
    job_id = scheduled_verification()
    token = csrf_token(support)
    answer = support.post(f"/console/emails/{job_id}/resend", data={"csrf_token": token})
    assert answer.status_code == 409
    assert "Only a failed or bounced email can be resent; this one is scheduled." in answer.text
    assert support.get(f"/console/emails/{job_id}/resend").status_code == 409
    assert not [target for _, action, target in audit_lines() if job_id in (target or "")]


def test_cancelling_a_scheduled_email(support: TestClient) -> None:
    job_id = scheduled_verification()
    action, fields = confirm_form(support, f"/console/emails/{job_id}/cancel")
    done = support.post(action, data=fields, follow_redirects=False)
    assert done.status_code == 303
    assert done.headers["location"] == f"/console/emails/{job_id}?done=cancelled"
    assert stored(job_id).status == "cancelled"
    page = support.get(done.headers["location"]).text
    assert "The job was cancelled." in page and "Cancelled from the console" in page
    assert ("console:sam", "job.cancel", job_id) in audit_lines()

    again = support.post(action, data=fields)
    assert again.status_code == 409
    assert "this one is cancelled" in again.text
    missing = support.post(f"/console/emails/{uuid.uuid4()}/cancel", data=fields)
    assert missing.status_code == 404


def test_an_action_without_the_csrf_token_is_refused_and_changes_nothing(
    support: TestClient,
) -> None:
    job_id = scheduled_verification()
    for data in ({}, {"csrf_token": "made-up", "confirm": "yes"}):
        answer = support.post(f"/console/emails/{job_id}/cancel", data=data)
        assert answer.status_code == 403
        assert "did not come from the console" in answer.text
    assert stored(job_id).status == "scheduled"
    # A token from another session is no better.
    make_user("sue", "support")
    with TestClient(web_app()) as other:
        theirs = sign_in(other, "sue")
    answer = support.post(f"/console/emails/{job_id}/cancel", data={"csrf_token": theirs})
    assert answer.status_code == 403
    assert stored(job_id).status == "scheduled"


def test_a_suppression_added_here_skips_the_next_marketing_email(
    support: TestClient, smtp: SmtpServer
) -> None:
    from email_worker.tasks import task_for

    token = csrf_token(support, "/console/suppressions")
    unconfirmed = support.post(
        "/console/suppressions",
        data={
            "csrf_token": token,
            "address": "Nia@Example.com",
            "scope": "marketing",
            "reason": "unsubscribe",
        },
    )
    assert unconfirmed.status_code == 400 and "Tick the box to confirm" in unconfirmed.text
    bad = support.post(
        "/console/suppressions",
        data={
            "csrf_token": token,
            "address": "nia at example",
            "scope": "marketing",
            "reason": "unsubscribe",
            "confirm": "yes",
        },
    )
    assert bad.status_code == 400 and "The address cannot be suppressed" in bad.text

    added = support.post(
        "/console/suppressions",
        data={
            "csrf_token": token,
            "address": "Nia@Example.com",
            "scope": "marketing",
            "reason": "unsubscribe",
            "confirm": "yes",
        },
        follow_redirects=False,
    )
    assert added.status_code == 303
    listing = support.get(added.headers["location"]).text
    assert "The address is suppressed." in listing
    assert "<td>nia@example.com</td>" in listing  # as stored: the one comparable form

    newsletter = task_for("newsletter").apply_async(
        kwargs={"to": "nia@example.com", "data": NEWSLETTER, "tracked": True}
    )
    wait_for_status(newsletter.id, "suppressed")
    # A transactional email still goes: the scope is marketing.
    from email_worker.tasks import send_email_verification

    receipt = send_email_verification.apply_async(
        kwargs={"to": "nia@example.com", "data": VERIFICATION}
    )
    wait_for_status(receipt.id, "sent")
    (received,) = smtp.wait_for(1)
    assert received.message["Message-ID"] == f"<{receipt.id}@mail.example.com>"

    from email_worker.db.sealing import lookup_hash

    hashed = lookup_hash("nia@example.com")
    assert ("console:sam", "suppression.add", f"address hash {hashed[:16]} (marketing)") in (
        audit_lines()
    )
    assert not any("nia" in (target or "").lower() for _, _, target in audit_lines())

    action, fields = confirm_form(support, f"/console/suppressions/{hashed}/remove")
    removed = support.post(action, data=fields, follow_redirects=False)
    assert removed.status_code == 303
    after = support.get(removed.headers["location"]).text  # read from the primary
    assert "The address is no longer suppressed." in after and "nia@example.com" not in after
    assert ("console:sam", "suppression.remove", f"address hash {hashed[:16]}") in audit_lines()
    again = task_for("newsletter").apply_async(
        kwargs={"to": "nia@example.com", "data": NEWSLETTER, "tracked": True}
    )
    wait_for_status(again.id, "sent")


def stored_bulk(count: int = 5) -> uuid.UUID:
    """A bulk send as send_bulk stores it before publishing its batches."""
    from email_worker.db import bulk as db
    from email_worker.db.session import primary_session
    from email_worker.producer import bulk_requests

    bulk_id = uuid.uuid4()
    kwargs = {
        "template_id": "generic_notice",
        "recipients": [
            {"to": f"r{i}@example.com", "data": {"title": "Notice", "message": "Hello"}}
            for i in range(count)
        ],
    }
    request = bulk_requests.check_bulk(kwargs)
    with primary_session() as session:
        db.create_bulk(
            session,
            bulk_id=bulk_id,
            template_id="generic_notice",
            kind="email",
            payload=request.shared_payload(),
            provider=None,
            recipients=request.recipients,
        )
    wait_for_replay(DATABASE)
    return bulk_id


def test_cancelling_a_bulk_send(support: TestClient) -> None:
    bulk_id = stored_bulk()
    found = support.get("/console/bulk", params={"id": str(bulk_id)}, follow_redirects=False)
    assert found.headers["location"] == f"/console/bulk/{bulk_id}"
    page = support.get(f"/console/bulk/{bulk_id}").text
    assert "generic_notice" in page and "Cancel the bulk send" in page
    token = csrf_token(support, f"/console/bulk/{bulk_id}")

    unconfirmed = support.post(f"/console/bulk/{bulk_id}/cancel", data={"csrf_token": token})
    assert unconfirmed.status_code == 400
    done = support.post(
        f"/console/bulk/{bulk_id}/cancel",
        data={"csrf_token": token, "confirm": "yes"},
        follow_redirects=False,
    )
    assert done.status_code == 303
    page = support.get(done.headers["location"]).text
    assert "The bulk send was cancelled." in page and "cancelled" in page
    assert ("console:sam", "bulk.cancel", f"{bulk_id} (5 recipients)") in audit_lines()
    assert support.get(f"/console/bulk/{uuid.uuid4()}").status_code == 404


def test_a_viewer_is_refused_every_action(
    viewer: TestClient, support: TestClient, smtp: SmtpServer
) -> None:
    failed = failed_verification(smtp)
    scheduled = scheduled_verification()
    bulk_id = stored_bulk(2)
    token = csrf_token(viewer)  # the viewer's own, valid token: the role is what refuses
    from email_worker.db.sealing import lookup_hash

    make_user("dummy", "viewer")  # an unrelated account, to have something audited
    support.post(
        "/console/suppressions",
        data={
            "csrf_token": csrf_token(support),
            "address": "zed@example.com",
            "scope": "all",
            "reason": "manual",
            "confirm": "yes",
        },
    )
    hashed = lookup_hash("zed@example.com")
    posts = {
        f"/console/emails/{failed}/resend": {},
        f"/console/emails/{scheduled}/cancel": {},
        "/console/suppressions": {"address": "x@example.com", "scope": "all", "reason": "manual"},
        f"/console/suppressions/{hashed}/remove": {},
        f"/console/bulk/{bulk_id}/cancel": {},
    }
    before = audit_lines()
    for path, data in posts.items():
        answer = viewer.post(path, data={"csrf_token": token, "confirm": "yes", **data})
        assert answer.status_code == 403, path
        assert "This needs the support role; you have viewer." in answer.text
    for path in (
        f"/console/emails/{failed}/resend",
        f"/console/emails/{scheduled}/cancel",
        f"/console/suppressions/{hashed}/remove",
        "/console/audit",
    ):
        assert viewer.get(path).status_code == 403, path
    assert stored(failed).status == "failed" and stored(scheduled).status == "scheduled"
    assert audit_lines() == before
    # What a viewer sees offers no action.
    for path in (f"/console/emails/{failed}", "/console/suppressions", f"/console/bulk/{bulk_id}"):
        page = viewer.get(path).text
        assert page.count('method="post"') == 1, path  # signing out, nothing else
        assert "zed@example.com" not in page
    wait_for_replay(DATABASE)  # the list reads the replica
    assert "z***@example.com" in viewer.get("/console/suppressions").text


def test_the_audit_page_lists_console_actions(support: TestClient) -> None:
    job_id = scheduled_verification()
    action, fields = confirm_form(support, f"/console/emails/{job_id}/cancel")
    support.post(action, data=fields)
    page = support.get("/console/audit")
    assert page.status_code == 200
    assert "console:sam" in page.text and "job.cancel" in page.text and job_id in page.text
    assert "console.sign_in" in page.text
