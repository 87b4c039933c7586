"""The console's Templates and Overview pages, as a signed-in viewer or support user sees them."""

from __future__ import annotations

import html
import re

import pytest
from fastapi.testclient import TestClient

from tests.support.console import make_user, settings_changed, sign_in

_FRAME = re.compile(r'<iframe src="([^"]+)" sandbox=""')

pytestmark = pytest.mark.usefixtures("fresh_sign_in_limits")


@pytest.fixture
def viewer(client: TestClient) -> str:
    make_user("vera", "viewer")
    return sign_in(client, "vera")


@pytest.fixture
def support(client: TestClient) -> str:
    make_user("sam", "support")
    return sign_in(client, "sam")


def frame_of(page: str) -> str:
    found = _FRAME.search(page)
    assert found is not None, "the page has no sandboxed frame"
    return html.unescape(found.group(1))


def test_the_list_links_every_template_with_its_kinds_and_variables(
    client: TestClient, viewer: str
) -> None:
    page = client.get("/console/templates")
    assert page.status_code == 200
    assert '<a href="/console/templates/password_reset">password_reset</a>' in page.text
    assert "<code>expires_in_minutes</code>" in page.text
    assert "none: sent by <code>template_id</code>" in page.text  # generic_notice
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_a_viewer_sees_the_sample_preview_and_its_frame_but_no_forms(
    client: TestClient, viewer: str
) -> None:
    page = client.get("/console/templates/booking_confirmation")
    assert page.status_code == 200
    assert "Jazz at the Riverside" in page.text  # the text part, shown as text
    subject = "Booking confirmed: Jazz at the Riverside (BK-20261127-0042)"
    assert f'id="preview-subject">{subject}<' in page.text
    assert "need the support role" in page.text and "/test-send" not in page.text
    frame = client.get(frame_of(page.text))
    assert frame.status_code == 200 and "Row F, seat 12" in frame.text
    policy = frame.headers["content-security-policy"]
    assert "sandbox" in policy and "default-src 'none'" in policy and "script" not in policy
    assert "frame-ancestors 'self'" in policy and frame.headers["x-frame-options"] == "SAMEORIGIN"


def test_a_viewer_is_refused_the_typed_preview_and_the_test_send(
    client: TestClient, viewer: str
) -> None:
    for action in ("preview", "test-send"):
        answer = client.post(
            f"/console/templates/welcome_email/{action}",
            data={"csrf_token": viewer, "data": "{}", "to": "qa@example.com"},
        )
        assert answer.status_code == 403 and "needs the support role" in answer.text


def test_support_previews_typed_data_in_a_frame_kept_for_them_only(
    client: TestClient, support: str
) -> None:
    typed = '{"user_name": "Zoë <Zed>", "product_name": "Acme", "login_url": "https://a.example"}'
    page = client.post(
        "/console/templates/welcome_email/preview", data={"csrf_token": support, "data": typed}
    )
    assert page.status_code == 200, page.text
    assert "Preview with your data" in page.text
    assert "Zoë &lt;Zed&gt;" in page.text  # the text part, escaped in the page
    frame_url = frame_of(page.text)
    assert frame_url.startswith("/console/templates/welcome_email/frame/")
    frame = client.get(frame_url)
    assert frame.status_code == 200 and "Zoë &lt;Zed&gt;" in frame.text
    make_user("other", "support")
    client.cookies.clear()  # signed out: a signed-in user is sent on from the sign-in page
    sign_in(client, "other")
    assert client.get(frame_url).status_code == 404  # another user's preview


@pytest.mark.parametrize(
    ("typed", "says"),
    [
        ('{"user_name": ', "not valid JSON (line 1, column 15"),
        ('{"user_name": "Ann"}', "lacks variables this template needs: login_url, product_name"),
        ('"Ann"', "must be a JSON object"),
    ],
)
def test_typed_data_that_cannot_be_rendered_is_a_message_on_the_page(
    client: TestClient, support: str, typed: str, says: str
) -> None:
    page = client.post(
        "/console/templates/welcome_email/preview", data={"csrf_token": support, "data": typed}
    )
    assert page.status_code == 422
    shown = html.unescape(page.text)
    assert says in shown
    for word in re.findall(r'"[^"]*"', typed):  # what was typed is in the form, to correct
        assert word in shown.split('name="data"')[1]


def test_a_form_without_the_csrf_token_is_refused(client: TestClient, support: str) -> None:
    answer = client.post(
        "/console/templates/welcome_email/preview", data={"csrf_token": "x", "data": "{}"}
    )
    assert answer.status_code == 403 and "did not come from the console" in answer.text


def test_a_test_send_names_why_it_is_refused_and_says_where_one_went(
    client: TestClient, support: str
) -> None:
    data = '{"user_name": "Ann", "product_name": "Acme", "login_url": "https://a.example"}'
    form = {"csrf_token": support, "data": data, "to": "ann@example.net"}
    with settings_changed(ALLOWED_RECIPIENTS="@example.org"):
        refused = client.post("/console/templates/welcome_email/test-send", data=form)
        assert refused.status_code == 422 and "That address is not allowed" in refused.text
        sent = client.post(
            "/console/templates/welcome_email/test-send", data={**form, "to": "qa@example.org"}
        )
    assert sent.status_code == 200, sent.text
    found = re.search(r'href="/console/emails/([0-9a-f-]{36})"', sent.text)
    assert found is not None and "Test sent" in sent.text


def test_an_unknown_template_is_a_404_page(client: TestClient, viewer: str) -> None:
    answer = client.get("/console/templates/no-such-template")
    assert answer.status_code == 404 and "no template with this id" in answer.text


def test_the_overview_shows_each_part(client: TestClient, viewer: str) -> None:
    page = client.get("/console/overview")
    assert page.status_code == 200
    for heading in ("Queues", "Sends and failures in the last 60 minutes", "Providers"):
        assert heading in page.text
    assert "Bulk sends in progress" in page.text and "No circuit is open." in page.text
    assert "Fast-path sends are not stored" in page.text


def test_the_pages_ask_a_visitor_to_sign_in(client: TestClient) -> None:
    for path in ("/console/templates", "/console/overview", "/console/templates/newsletter"):
        answer = client.get(path, follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"].startswith(
            "/console/sign-in?next="
        )
