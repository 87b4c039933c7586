"""Support staff at work in a real browser: find a customer's email by address, read its
timeline, resend it, suppress an address; a viewer reads masked addresses and is refused
every action."""

from __future__ import annotations

import time
import uuid

import pytest
from playwright.sync_api import Page, expect

from email_worker.db.models import utcnow
from email_worker.kinds import get_kind
from tests.browser.conftest import BrowserErrors, sign_in
from tests.support.browser import screenshot
from tests.support.console import make_user
from tests.support.jobs import wait_for_status
from tests.support.smtp_server import SmtpServer

pytestmark = pytest.mark.slow

CUSTOMER = "ann.lee@example.com"
OTHER = "bob.stone@example.com"


def send(kind: str, to: str) -> str:
    """A tracked send of ``kind`` with its sample data, as a producer makes it; its job id."""
    from email_worker.tasks import task_for

    result = task_for(kind).apply_async(
        kwargs={"to": to, "data": dict(get_kind(kind).sample_data), "tracked": True}
    )
    return str(result.id)


def failed_reset(smtp: SmtpServer) -> str:
    """A password reset to the customer that failed for good (the server refused the address),
    beside an email to someone else."""
    smtp.handler.refuse(CUSTOMER, "550 5.1.1 Mailbox unavailable")
    failed = send("password_reset", CUSTOMER)
    wait_for_status(send("welcome_email", OTHER), "sent")
    wait_for_status(failed, "failed")
    return failed


def bounced_reset(smtp: SmtpServer) -> str:
    """A password reset to the customer that went out, then bounced (a full mailbox: a soft
    bounce, which suppresses nothing), beside an email to someone else."""
    from email_worker.db.events import apply_pending, store_events
    from email_worker.db.session import primary_session
    from email_worker.tracking import events as ev

    job_id = send("password_reset", CUSTOMER)
    job = wait_for_status(job_id, "sent")
    wait_for_status(send("welcome_email", OTHER), "sent")
    with primary_session() as session:
        stored = store_events(
            session,
            [
                ev.DeliveryEvent(
                    provider="ses",
                    provider_event_id=f"{job_id}-bounce",
                    event_type=ev.BOUNCED,
                    occurred_at=utcnow(),
                    recipient=CUSTOMER,
                    provider_message_id=job.provider_message_id,
                    bounce_type=ev.SOFT,
                )
            ],
        )
        apply_pending(session, stored)
    wait_for_status(job_id, "bounced")
    return job_id


def test_support_finds_the_email_by_recipient_reads_its_timeline_and_resends_it(
    page: Page, smtp: SmtpServer, browser_errors: BrowserErrors
) -> None:
    job_id = bounced_reset(smtp)
    first = [r for r in smtp.received if r.recipients == [CUSTOMER]]
    assert [r.message["Subject"] for r in first] == ["Reset your password"]
    make_user("sam", "support")
    sign_in(page, "sam")
    page.get_by_label("Recipient (exact address)").fill(CUSTOMER)
    page.get_by_role("button", name="Search").click()
    results = page.get_by_role("table")
    expect(results.get_by_role("row")).to_have_count(2)  # the header and the one email
    row = results.get_by_role("row").nth(1)
    expect(row).to_contain_text("password_reset")
    expect(row).to_contain_text(CUSTOMER)
    expect(row).to_contain_text("bounced")
    screenshot(page, "emails-search")

    row.get_by_role("link").click()
    page.wait_for_url(f"**/console/emails/{job_id}")
    expect(page.get_by_role("heading", level=1)).to_contain_text("password_reset email")
    timeline = page.locator("ol.timeline")
    expect(timeline).to_contain_text("Sent")
    expect(timeline).to_contain_text("Bounced")
    expect(page.frame_locator("iframe.message").get_by_text("Ann Lee").first).to_be_visible()
    screenshot(page, "job-timeline")

    page.get_by_role("link", name="Resend…").click()
    expect(page.get_by_role("heading", name="Resend this email?")).to_be_visible()
    page.get_by_role("button", name="Resend").click()
    page.wait_for_url("**/console/emails/*?done=resent")
    resent_id = page.url.split("/console/emails/")[1].split("?")[0]
    assert resent_id != job_id
    wait_for_status(resent_id, "sent")
    both = [r for r in smtp.received if r.recipients == [CUSTOMER]]
    assert [r.message["Subject"] for r in both] == ["Reset your password"] * 2
    assert both[0].message["Message-ID"] != both[1].message["Message-ID"]
    page.reload()
    expect(page.get_by_text("Resend of")).to_be_visible()
    assert browser_errors == []


def test_a_suppression_added_in_the_console_skips_the_next_marketing_email(
    page: Page, smtp: SmtpServer, browser_errors: BrowserErrors
) -> None:
    make_user("sam", "support")
    sign_in(page, "sam")
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Suppressions").click()
    page.get_by_label("Address", exact=True).fill(CUSTOMER)
    page.get_by_label("Scope").select_option("marketing")
    page.get_by_label("Stop sending to this address").check()
    page.get_by_role("button", name="Suppress").click()
    expect(page.get_by_role("status")).to_have_text("The address is suppressed.")
    expect(page.get_by_role("table").get_by_role("row").nth(1)).to_contain_text(CUSTOMER)

    newsletter = send("newsletter", CUSTOMER)
    wait_for_status(newsletter, "suppressed")
    reset = send("password_reset", CUSTOMER)  # the scope is marketing: this one goes
    wait_for_status(reset, "sent")
    assert [r.message["Subject"] for r in smtp.received] == ["Reset your password"]

    page.get_by_role("navigation", name="Console").get_by_role("link", name="Emails").click()
    page.get_by_label("Recipient (exact address)").fill(CUSTOMER)
    page.get_by_label("Kind").select_option("newsletter")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("table").get_by_role("row").nth(1)).to_contain_text("suppressed")
    assert browser_errors == []


def test_a_viewer_sees_masked_addresses_and_is_refused_every_action(
    page: Page, smtp: SmtpServer, browser_errors: BrowserErrors
) -> None:
    job_id = failed_reset(smtp)
    arrived = len(smtp.received)
    make_user("vera", "viewer")
    sign_in(page, "vera")
    page.get_by_label("Recipient (exact address)").fill(CUSTOMER)
    page.get_by_role("button", name="Search").click()
    results = page.get_by_role("table")
    expect(results.get_by_role("row").nth(1)).to_contain_text("a***@example.com")
    assert CUSTOMER not in results.inner_html()  # the search form keeps what was typed

    page.goto(f"/console/emails/{job_id}")
    expect(page.get_by_role("heading", level=1)).to_contain_text("password_reset email")
    expect(page.get_by_text("a***@example.com").first).to_be_visible()
    assert CUSTOMER not in page.content()
    expect(page.get_by_role("link", name="Resend…")).to_have_count(0)
    page.goto("/console/suppressions")
    expect(page.get_by_role("button", name="Suppress")).to_have_count(0)

    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    assert token
    form = {"csrf_token": token, "confirm": "yes"}
    for path, extra in (
        (f"/console/emails/{job_id}/resend", {}),
        (f"/console/emails/{job_id}/cancel", {}),
        ("/console/suppressions", {"address": CUSTOMER, "scope": "all", "reason": "manual"}),
        (f"/console/suppressions/{'0' * 64}/remove", {}),
        (f"/console/bulk/{uuid.uuid4()}/cancel", {}),
        ("/console/templates/newsletter/preview", {"data": "{}"}),
        ("/console/templates/newsletter/test-send", {"data": "{}", "to": "qa@example.org"}),
    ):
        answer = page.request.post(path, form={**form, **extra})
        assert answer.status == 403, (path, answer.status)
        assert "needs the support role" in answer.text()
    page.goto("/console/suppressions")
    expect(page.get_by_text("No address is suppressed.")).to_be_visible()
    time.sleep(1)  # a resend that slipped through would have reached the server by now
    assert len(smtp.received) == arrived
    assert browser_errors == []
