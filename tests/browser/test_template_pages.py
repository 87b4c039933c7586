"""The Templates and Overview pages in a real browser: preview typed data, send a test, look
at the service; a viewer reads but is refused every action."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator

import pytest
import redis
from playwright.sync_api import Browser, Page, expect

from email_worker.config import get_settings
from email_worker.db import bulk
from email_worker.db.models import EmailJob, utcnow
from email_worker.db.session import primary_session
from email_worker.providers.circuit import KEY_PREFIX, circuit_for
from tests.browser.conftest import TEST_SEND_DOMAIN, BrowserErrors, sign_in
from tests.conftest import DATABASE
from tests.support.browser import screenshot
from tests.support.commands import email_worker
from tests.support.console import PASSWORD, make_user
from tests.support.pg import wait_for_replay
from tests.support.smtp_server import SmtpServer

pytestmark = pytest.mark.slow

TYPED = {
    "user_name": "Grace Hopper",
    "booking_reference": "BK-20261204-0007",
    "event_name": "Organ Recital",
    "event_date": "Friday 18 December 2026, 20:00",
    "venue": "St Mary's, Market Square",
    "seats": ["Row A, seat 3"],
    "total": "18.00",
    "currency": "EUR",
    "manage_url": "https://app.example.com/bookings/BK-20261204-0007",
}


def test_support_previews_typed_data_and_sends_a_test_that_arrives(
    page: Page, smtp: SmtpServer, browser_errors: BrowserErrors
) -> None:
    email_worker(
        *("console-users", "create", "sam", "--role", "support", "--password-stdin"),
        input_text=PASSWORD + "\n",
    )
    sign_in(page, "sam")
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Templates").click()
    expect(page.get_by_role("heading", name="Templates", exact=True)).to_be_visible()
    page.get_by_role("link", name="booking_confirmation").click()

    # The sample first: the subject, the text, and the HTML in its sandboxed frame.
    expect(page.locator("#preview-subject")).to_have_text(
        "Booking confirmed: Jazz at the Riverside (BK-20261127-0042)"
    )
    frame = page.frame_locator("iframe[sandbox='']")
    expect(frame.get_by_text("Row F, seat 12")).to_be_visible()

    page.get_by_label("Data (a JSON object").fill(json.dumps(TYPED, indent=2))
    page.get_by_role("button", name="Preview").click()
    expect(page.get_by_role("heading", name="Preview with your data")).to_be_visible()
    expect(page.locator("#preview-subject")).to_have_text(
        "Booking confirmed: Organ Recital (BK-20261204-0007)"
    )
    expect(frame.get_by_text("Grace Hopper").first).to_be_visible()
    expect(page.locator("#preview-text")).to_contain_text("St Mary's, Market Square")
    screenshot(page, "template-preview")

    page.get_by_label("Send to").fill(f"ann@{TEST_SEND_DOMAIN.replace('.org', '.net')}")
    page.get_by_role("button", name="Send the test").click()
    expect(page.get_by_role("alert")).to_contain_text("That address is not allowed")

    page.get_by_label("Send to").fill(f"qa@{TEST_SEND_DOMAIN}")
    page.get_by_role("button", name="Send the test").click()
    expect(page.get_by_role("status")).to_contain_text("Test sent")
    (received,) = smtp.wait_for(1)
    assert received.recipients == [f"qa@{TEST_SEND_DOMAIN}"]
    assert received.message["Subject"] == "Booking confirmed: Organ Recital (BK-20261204-0007)"
    assert browser_errors == []


def test_bad_typed_data_is_a_message_on_the_page(page: Page, browser_errors: BrowserErrors) -> None:
    make_user("sam", "support")
    sign_in(page, "sam")
    page.goto("/console/templates/welcome_email")
    page.get_by_label("Data (a JSON object").fill('{"user_name": "Ann",}')
    page.get_by_role("button", name="Preview").click()
    expect(page.get_by_role("alert")).to_contain_text("not valid JSON (line 1")
    page.get_by_label("Data (a JSON object").fill('{"user_name": "Ann"}')
    page.get_by_role("button", name="Preview").click()
    expect(page.get_by_role("alert")).to_contain_text("login_url, product_name")
    assert browser_errors == []


def test_a_viewer_sees_the_sample_and_is_refused_the_actions(
    page: Page, browser_errors: BrowserErrors
) -> None:
    make_user("vera", "viewer")
    sign_in(page, "vera")
    page.goto("/console/templates/password_reset")
    expect(page.locator("#preview-subject")).to_be_visible()
    expect(page.get_by_role("button", name="Send the test")).to_have_count(0)
    expect(page.get_by_text("need the support role")).to_be_visible()
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    assert token
    for action in ("preview", "test-send"):
        answer = page.request.post(
            f"/console/templates/password_reset/{action}",
            form={"csrf_token": token, "data": "{}", "to": f"qa@{TEST_SEND_DOMAIN}"},
        )
        assert answer.status == 403 and "needs the support role" in answer.text()
    assert browser_errors == []


@pytest.fixture
def open_circuit(redis_client: redis.Redis) -> Iterator[None]:
    """The SMTP provider's circuit open, as after a run of failures in the workers."""
    settings = get_settings()
    circuit = circuit_for("smtp", settings)
    for _ in range(settings.circuit_failures):
        circuit.record_failure("421 4.7.0 Try again later")
    yield
    for key in redis_client.scan_iter(f"{KEY_PREFIX}{settings.queue_name}:*"):
        redis_client.delete(key)


def recent_jobs() -> uuid.UUID:
    """Tracked sends of the last hour, and a bulk send under way (its id)."""
    now = utcnow()
    rows = [
        ("password_reset", "sent", "smtp", 14),
        ("password_reset", "delivered", "smtp", 3),
        ("booking_confirmation", "sent", "smtp", 9),
        ("payment_receipt", "failed", None, 1),
        ("newsletter", "bounced", "smtp", 2),
    ]
    with primary_session() as session:
        for kind, status, provider, count in rows:
            for i in range(count):
                moment = now - dt.timedelta(minutes=2 + i)
                session.add(
                    EmailJob(
                        id=uuid.uuid4(),
                        job_type=kind,
                        status=status,
                        provider=provider,
                        created_at=moment - dt.timedelta(seconds=3),
                        updated_at=moment,
                        sent_at=moment if status != "failed" else None,
                    )
                )
        bulk_id = uuid.uuid4()
        bulk.create_bulk(
            session,
            bulk_id=bulk_id,
            template_id="newsletter",
            kind="newsletter",
            payload={},
            provider=None,
            recipients=[(f"reader{i}@example.com", {}) for i in range(40)],
        )
        bulk.mark_bulk_sending(session, bulk_id)
    wait_for_replay(DATABASE)
    return bulk_id


def test_the_overview_shows_sends_circuits_and_bulk_sends(
    page: Page, open_circuit: None, browser_errors: BrowserErrors
) -> None:
    bulk_id = recent_jobs()
    make_user("vera", "viewer")
    sign_in(page, "vera")
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Overview").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    sends = page.get_by_role("table", name="By kind and provider")
    expect(sends).to_contain_text("28 sent, 1 failed, 2 bounced")
    expect(sends.get_by_role("row", name="password_reset smtp 17 0 0")).to_be_visible()
    expect(page.get_by_text("Open circuits: smtp")).to_be_visible()
    bulks = page.get_by_role("table", name="Pending or sending")
    expect(bulks).to_contain_text("0 / 40")
    expect(bulks.get_by_role("link")).to_have_attribute("href", f"/console/bulk/{bulk_id}")
    for priority in ("high", "default", "low"):
        expect(page.get_by_role("row", name=f"{priority} ")).to_have_count(1)
    screenshot(page, "overview")
    assert browser_errors == []


def test_the_typed_preview_works_by_keyboard_with_javascript_off(
    chromium: Browser, console_url: str, clean_tables: None
) -> None:
    make_user("sam", "support")
    context = chromium.new_context(base_url=console_url, java_script_enabled=False)
    try:
        page = context.new_page()
        sign_in(page, "sam")
        page.goto("/console/templates/welcome_email")
        page.keyboard.press("Tab")
        expect(page.locator(":focus")).to_have_text("Skip to content")
        page.get_by_label("Data (a JSON object").fill(
            '{"user_name": "Kay", "product_name": "Acme", "login_url": "https://a.example"}'
        )
        for _ in range(5):  # from the data to its button, as a keyboard user goes
            page.keyboard.press("Tab")
            if page.locator(":focus").text_content() == "Preview":
                break
        expect(page.locator(":focus")).to_have_text("Preview")
        page.keyboard.press("Enter")
        expect(page.locator("#preview-subject")).to_have_text("Welcome to Acme")
        expect(page.frame_locator("iframe[sandbox='']").get_by_text("Kay").first).to_be_visible()
    finally:
        context.close()
