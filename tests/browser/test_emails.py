"""Support staff at work in a real browser: find a customer's email by address, read its
timeline, resend it, suppress an address; a viewer reads masked addresses and is refused
every action."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

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


def test_support_finds_the_email_by_recipient_and_reads_its_timeline(
    page: Page, smtp: SmtpServer, browser_errors: BrowserErrors
) -> None:
    job_id = failed_reset(smtp)
    make_user("sam", "support")
    sign_in(page, "sam")
    page.get_by_label("Recipient (exact address)").fill(CUSTOMER)
    page.get_by_role("button", name="Search").click()
    results = page.get_by_role("table")
    expect(results.get_by_role("row")).to_have_count(2)  # the header and the one email
    row = results.get_by_role("row").nth(1)
    expect(row).to_contain_text("password_reset")
    expect(row).to_contain_text(CUSTOMER)
    expect(row).to_contain_text("failed")
    screenshot(page, "emails-search")

    row.get_by_role("link").click()
    page.wait_for_url(f"**/console/emails/{job_id}")
    expect(page.get_by_role("heading", level=1)).to_contain_text("password_reset email")
    timeline = page.locator("ol.timeline")
    expect(timeline).to_contain_text("550")
    expect(page.frame_locator("iframe.message").get_by_text("Ann Lee").first).to_be_visible()
    screenshot(page, "job-timeline")
    assert browser_errors == []


def test_a_viewer_sees_masked_addresses(
    page: Page, smtp: SmtpServer, browser_errors: BrowserErrors
) -> None:
    job_id = failed_reset(smtp)
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
    expect(page.get_by_role("heading", name="Actions")).to_have_count(0)
    assert browser_errors == []
