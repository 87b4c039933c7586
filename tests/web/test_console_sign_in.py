"""Signing in to the console: accounts, the trusted proxy, cookies, CSRF, headers, the CLI."""

from __future__ import annotations

import re
import uuid

import pytest
from fastapi.testclient import TestClient

from tests.support.commands import email_worker
from tests.support.console import (
    PASSWORD,
    audit_lines,
    make_user,
    settings_changed,
    sign_in,
    sign_in_form,
)
from tests.support.web import web_app

pytestmark = pytest.mark.usefixtures("fresh_sign_in_limits")


def test_a_page_sends_a_visitor_to_sign_in_and_back(client: TestClient) -> None:
    make_user("mia", "support")
    answer = client.get("/console/emails?status=failed", follow_redirects=False)
    assert answer.status_code == 303
    assert (
        answer.headers["location"] == "/console/sign-in?next=%2Fconsole%2Femails%3Fstatus%3Dfailed"
    )

    signed = client.post(
        "/console/sign-in",
        data={
            **sign_in_form(client),
            "name": "mia",
            "password": PASSWORD,
            "next": "/console/emails?status=failed",
        },
        follow_redirects=False,
    )
    assert signed.status_code == 303
    assert signed.headers["location"] == "/console/emails?status=failed"
    page = client.get("/console/emails")
    assert page.status_code == 200
    assert "mia" in page.text and "(support)" in page.text
    assert ("console:mia", "console.sign_in", "mia") in audit_lines(100)


def test_the_session_cookie_is_http_only_strict_and_limited_to_the_console(
    client: TestClient,
) -> None:
    make_user("mia", "viewer")
    signed = client.post(
        "/console/sign-in",
        data={**sign_in_form(client), "name": "mia", "password": PASSWORD},
        follow_redirects=False,
    )
    cookie = signed.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie
    assert "max-age=28800" in cookie
    assert "secure" not in cookie  # plain http, and CONSOLE_SECURE_COOKIES is off
    assert PASSWORD.lower() not in cookie

    with TestClient(web_app(), base_url="https://console.example.com") as over_https:
        signed = over_https.post(
            "/console/sign-in",
            data={**sign_in_form(over_https), "name": "mia", "password": PASSWORD},
            follow_redirects=False,
        )
        assert "; secure" in signed.headers["set-cookie"].lower()
    client.cookies.clear()  # signed out: the sign-in page shows its form again
    with settings_changed(CONSOLE_SECURE_COOKIES="true"):
        signed = client.post(
            "/console/sign-in",
            data={**sign_in_form(client), "name": "mia", "password": PASSWORD},
            follow_redirects=False,
        )
        assert "; secure" in signed.headers["set-cookie"].lower()


@pytest.mark.parametrize(
    ("name", "password"),
    [("mia", "not the password"), ("nobody", PASSWORD), ("mia", ""), ("m\x00ia", PASSWORD)],
    ids=["wrong password", "unknown name", "no password", "no possible name"],
)
def test_a_failed_sign_in_says_one_thing_and_sets_no_cookie(
    client: TestClient, name: str, password: str
) -> None:
    make_user("mia", "admin")
    answer = client.post(
        "/console/sign-in",
        data={**sign_in_form(client), "name": name, "password": password},
        follow_redirects=False,
    )
    assert answer.status_code == 401
    assert "The name or password is not right, or the account is disabled." in answer.text
    assert "email_worker_console=" not in answer.headers.get("set-cookie", "")
    assert client.get("/console/emails", follow_redirects=False).status_code == 303


def test_a_disabled_account_cannot_sign_in_and_its_session_ends(client: TestClient) -> None:
    from email_worker.db.console_users import disable_user

    make_user("mia", "support")
    sign_in(client, "mia")
    disable_user("mia")
    assert client.get("/console/emails", follow_redirects=False).status_code == 303
    answer = client.post(
        "/console/sign-in", data={**sign_in_form(client), "name": "mia", "password": PASSWORD}
    )
    assert answer.status_code == 401


def test_a_forged_or_expired_cookie_is_not_a_session(client: TestClient) -> None:
    from email_worker.web.console import sessions

    make_user("mia", "admin")
    sign_in(client, "mia")
    good = client.cookies[sessions.COOKIE]
    payload, mac = good.split(".")
    client.cookies.clear()

    # Signed with another key, expired, a MAC cut short, not a cookie of ours at all.
    with settings_changed(CONSOLE_SESSION_KEY="another-console-key-of-32-characters!!"):
        forged = sessions.encode(sessions.Session("mia", "x", 4_102_444_800))
    expired = sessions.encode(sessions.Session("mia", "x", 1_000_000_000))
    for value in (f"{payload}.{mac[:-2]}AA", forged, expired, "garbage"):
        client.cookies.set(sessions.COOKIE, value, path="/console")
        assert client.get("/console/emails", follow_redirects=False).status_code == 303
        client.cookies.clear()


def test_sign_in_attempts_are_limited_per_name(client: TestClient) -> None:
    make_user("mia", "support")
    for _ in range(5):
        answer = client.post(
            "/console/sign-in",
            data={**sign_in_form(client), "name": "mia", "password": "wrong one"},
        )
        assert answer.status_code == 401
    # The right password too, now: the limit is what stops guessing.
    answer = client.post(
        "/console/sign-in", data={**sign_in_form(client), "name": "mia", "password": PASSWORD}
    )
    assert answer.status_code == 429
    assert int(answer.headers["Retry-After"]) >= 1
    assert "Too many sign-in attempts" in answer.text
    # Another name from the same address still gets in.
    make_user("noor", "support")
    sign_in(client, "noor")


def test_a_trusted_proxy_names_the_user_and_no_one_else_can(client: TestClient) -> None:
    make_user("proxy-mia", "support", password=None)
    header = {"X-Forwarded-User": "proxy-mia"}
    with settings_changed(
        CONSOLE_PROXY_USER_HEADER="X-Forwarded-User", CONSOLE_TRUSTED_PROXIES="10.1.0.0/24"
    ):
        with TestClient(web_app(), client=("10.1.0.7", 40000)) as from_proxy:
            page = from_proxy.get("/console/emails", headers=header, follow_redirects=False)
            assert page.status_code == 200 and "proxy-mia" in page.text
            assert "Sign out" not in page.text  # the proxy signs people out, not the console
            # An account without a password cannot sign in with the form.
            answer = from_proxy.post(
                "/console/sign-in",
                data={**sign_in_form(from_proxy), "name": "proxy-mia", "password": ""},
            )
            assert answer.status_code == 401
            # A name without an account gets nothing, unless a default role is set.
            stranger = {"X-Forwarded-User": "stranger"}
            assert from_proxy.get("/console/emails", headers=stranger).status_code == 403
            with settings_changed(CONSOLE_PROXY_DEFAULT_ROLE="viewer"):
                page = from_proxy.get("/console/emails", headers=stranger)
                assert page.status_code == 200 and "(viewer)" in page.text
        with TestClient(web_app(), client=("10.2.0.7", 40000)) as elsewhere:
            page = elsewhere.get("/console/emails", headers=header, follow_redirects=False)
            assert page.status_code == 303  # the header is ignored: sign in
    # Without the setting, the trusted address's header means nothing either.
    with TestClient(web_app(), client=("10.1.0.7", 40000)) as from_proxy:
        page = from_proxy.get("/console/emails", headers=header, follow_redirects=False)
        assert page.status_code == 303


def test_sign_out_needs_the_csrf_token_and_ends_the_session(client: TestClient) -> None:
    make_user("mia", "viewer")
    token = sign_in(client, "mia")
    refused = client.post("/console/sign-out", data={"csrf_token": "forged"})
    assert refused.status_code == 403
    assert "did not come from the console" in refused.text
    assert client.get("/console/emails", follow_redirects=False).status_code == 200
    done = client.post("/console/sign-out", data={"csrf_token": token}, follow_redirects=False)
    assert done.status_code == 303 and "max-age=0" in done.headers["set-cookie"].lower()
    assert client.get("/console/emails", follow_redirects=False).status_code == 303


def test_the_csrf_token_belongs_to_one_session(client: TestClient) -> None:
    make_user("mia", "viewer")
    first = sign_in(client, "mia")
    client.cookies.clear()
    second = sign_in(client, "mia")
    assert first != second
    assert client.post("/console/sign-out", data={"csrf_token": first}).status_code == 403


@pytest.mark.parametrize(
    "path", ["/console/sign-in", "/console/emails", "/console/static/console.css"]
)
def test_every_console_answer_has_the_security_headers(client: TestClient, path: str) -> None:
    make_user("mia", "viewer")
    sign_in(client, "mia")
    answer = client.get(path)
    assert answer.status_code == 200
    policy = answer.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["Referrer-Policy"] == "no-referrer"
    if path.endswith(".css"):
        return
    assert answer.headers["Cache-Control"] == "no-store"
    assert "<script" not in answer.text
    assert re.search(r"\son[a-z]+\s*=", answer.text) is None  # no inline event handler


def test_a_refusal_page_has_the_headers_too(client: TestClient) -> None:
    answer = client.post("/console/sign-out", content=b"x", headers={"content-type": "text/plain"})
    assert answer.status_code == 415
    assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]
    for unknown in (client.get("/console/no-such-page"), client.put("/console/emails")):
        assert unknown.status_code in (404, 405)
        assert "frame-ancestors 'none'" in unknown.headers["Content-Security-Policy"]
        assert unknown.headers["Cache-Control"] == "no-store"
    # The rest of the web app keeps its own headers.
    assert "Content-Security-Policy" not in client.get("/v1/emails/x").headers


def test_in_live_mode_the_console_needs_its_own_key(client: TestClient) -> None:
    make_user("mia", "viewer")
    with settings_changed(CONSOLE_SESSION_KEY=""):
        for answer in (
            client.get("/console/sign-in"),
            client.post("/console/sign-in", data={"name": "mia", "password": PASSWORD}),
        ):
            assert answer.status_code == 503
            assert "CONSOLE_SESSION_KEY is required" in answer.text
        with settings_changed(DELIVERY_MODE="outbox"):
            sign_in(client, "mia")


def test_the_command_creates_lists_changes_and_deletes_users(clean_tables: None) -> None:
    name = f"ops-{uuid.uuid4().hex[:6]}"
    created = email_worker(
        "console-users",
        "create",
        name,
        "--role",
        "support",
        "--password-stdin",
        input_text=f"{PASSWORD}\n",
    )
    assert f"created console user {name} (support, password set)" in created.stdout
    assert PASSWORD not in created.stdout + created.stderr

    from email_worker.db.console_users import authenticate

    assert authenticate(name, PASSWORD) is not None

    again = email_worker(
        "console-users",
        "create",
        name,
        "--role",
        "admin",
        "--password-stdin",
        input_text=f"{PASSWORD}\n",
        check=False,
    )
    assert again.returncode == 2
    assert again.stderr.strip() == f"email-worker: a console user named {name!r} already exists"
    email_worker("console-users", "set-role", name, "admin")
    listed = email_worker("console-users", "list").stdout
    assert name in listed and "admin" in listed and "active" in listed
    email_worker("console-users", "disable", name)
    assert authenticate(name, PASSWORD) is None
    email_worker("console-users", "delete", name)
    missing = email_worker("console-users", "delete", name, check=False)
    assert missing.returncode == 2 and "no console user named" in missing.stderr

    actions = [(action, target) for actor, action, target in audit_lines(100) if actor == "cli"]
    for expected in (
        ("console_user.create", f"{name} (support)"),
        ("console_user.set_role", f"{name} (admin)"),
        ("console_user.disable", name),
        ("console_user.delete", name),
    ):
        assert expected in actions
    shown = email_worker("audit", "list").stdout
    assert "console_user.create" in shown and PASSWORD not in shown


def test_the_web_command_warns_when_the_console_has_no_key() -> None:
    from email_worker.config import get_settings

    with settings_changed(CONSOLE_SESSION_KEY=""):
        assert "the console is off" in (get_settings().console_warning() or "")
        with settings_changed(DELIVERY_MODE="outbox"):
            assert "development key" in (get_settings().console_warning() or "")
    assert get_settings().console_warning() is None


def test_a_sign_in_posted_from_another_site_is_refused(client: TestClient) -> None:
    """Another site could post its own name and password: the visitor would use its account."""
    make_user("mia", "support")
    # No form cookie (a cross-site POST does not carry a SameSite=Strict cookie), or a
    # token of another browser's form.
    with TestClient(web_app()) as elsewhere:
        foreign = sign_in_form(elsewhere)
    for data in ({}, foreign):
        answer = client.post(
            "/console/sign-in",
            data={"name": "mia", "password": PASSWORD, **data},
            follow_redirects=False,
        )
        assert answer.status_code == 403
        assert "did not come from the console" in answer.text
        assert "email_worker_console=" not in answer.headers.get("set-cookie", "")
    # The page it answers with is a fresh form, which works.
    sign_in(client, "mia")
