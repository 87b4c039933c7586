"""The admin's console pages: users and API keys, for admins only, audited as theirs."""

from __future__ import annotations

import html
import re

import pytest
from fastapi.testclient import TestClient

from tests.support.console import (
    PASSWORD,
    audit_lines,
    csrf_token,
    make_user,
    sign_in,
)
from tests.support.web import web_app

pytestmark = pytest.mark.usefixtures("fresh_sign_in_limits")


@pytest.fixture
def admin(client: TestClient) -> TestClient:
    make_user("ada", "admin")
    sign_in(client, "ada")
    return client


def test_only_an_admin_opens_the_admin_pages(admin: TestClient) -> None:
    make_user("sam", "support")
    with TestClient(web_app()) as support:
        token = sign_in(support, "sam")
        for path in ("/console/users", "/console/api-keys"):
            assert support.get(path).status_code == 403
            assert "Users" not in support.get("/console/emails").text.split("</nav>")[0]
        for path in ("/console/users", "/console/users/role", "/console/api-keys"):
            answer = support.post(path, data={"csrf_token": token, "name": "x", "role": "admin"})
            assert answer.status_code == 403, path
    assert admin.get("/console/users").status_code == 200
    assert admin.get("/console/api-keys").status_code == 200


def test_an_admin_adds_changes_and_removes_users(admin: TestClient) -> None:
    from email_worker.db.console_users import authenticate, find_user

    token = csrf_token(admin, "/console/users")
    differ = admin.post(
        "/console/users",
        data={
            "csrf_token": token,
            "name": "noor",
            "role": "support",
            "password": PASSWORD,
            "password_again": "something else",
        },
    )
    assert differ.status_code == 400 and "The two passwords differ." in differ.text
    short = admin.post(
        "/console/users",
        data={
            "csrf_token": token,
            "name": "noor",
            "role": "support",
            "password": "short",
            "password_again": "short",
        },
    )
    assert short.status_code == 400 and "12 to 1024 characters" in short.text
    made = admin.post(
        "/console/users",
        data={
            "csrf_token": token,
            "name": "noor",
            "role": "support",
            "password": PASSWORD,
            "password_again": PASSWORD,
        },
        follow_redirects=False,
    )
    assert made.status_code == 303
    assert authenticate("noor", PASSWORD) is not None
    taken = admin.post(
        "/console/users",
        data={"csrf_token": token, "name": "noor", "role": "viewer", "proxy_only": "yes"},
    )
    assert taken.status_code == 400 and "already exists" in taken.text

    admin.post("/console/users/role", data={"csrf_token": token, "name": "noor", "role": "viewer"})
    assert (found := find_user("noor")) is not None and found.role == "viewer"
    admin.post("/console/users/disable", data={"csrf_token": token, "name": "noor"})
    assert authenticate("noor", PASSWORD) is None
    admin.post("/console/users/enable", data={"csrf_token": token, "name": "noor"})
    unconfirmed = admin.post("/console/users/delete", data={"csrf_token": token, "name": "noor"})
    assert unconfirmed.status_code == 400
    admin.post(
        "/console/users/delete", data={"csrf_token": token, "name": "noor", "confirm": "yes"}
    )
    assert find_user("noor") is None
    missing = admin.post("/console/users/disable", data={"csrf_token": token, "name": "noor"})
    assert missing.status_code == 404 and "No console user named" in missing.text

    for action, target in (
        ("console_user.create", "noor (support)"),
        ("console_user.set_role", "noor (viewer)"),
        ("console_user.disable", "noor"),
        ("console_user.enable", "noor"),
        ("console_user.delete", "noor"),
    ):
        assert ("console:ada", action, target) in audit_lines()
    assert not any(PASSWORD in (target or "") for _, _, target in audit_lines())


def test_an_admin_cannot_lock_themselves_out(admin: TestClient) -> None:
    token = csrf_token(admin, "/console/users")
    for path, extra in (
        ("/console/users/role", {"role": "viewer"}),
        ("/console/users/disable", {}),
        ("/console/users/delete", {"confirm": "yes"}),
    ):
        answer = admin.post(path, data={"csrf_token": token, "name": "ada", **extra})
        assert answer.status_code == 409, path
        assert "You cannot change your own account here" in answer.text
    assert admin.get("/console/users").status_code == 200


def test_an_admin_makes_and_revokes_api_keys(admin: TestClient) -> None:
    from email_worker.db.api_keys import authenticate

    token = csrf_token(admin, "/console/api-keys")
    bad = admin.post(
        "/console/api-keys",
        data={"csrf_token": token, "name": "billing", "scope_send": "yes", "rate": "lots"},
    )
    assert bad.status_code == 400 and "such as 10/s or 600/min" in bad.text
    made = admin.post(
        "/console/api-keys",
        data={
            "csrf_token": token,
            "name": "billing",
            "scope_send": "yes",
            "kinds": "invoice, receipt",
            "expires": "30d",
            "rate": "10/s",
            "test": "yes",
        },
    )
    assert made.status_code == 201
    shown = re.search(r'id="new-key" value="([^"]+)"', made.text)
    assert shown is not None
    key = html.unescape(shown.group(1))
    found = authenticate(key)
    assert found is not None and found.name == "billing" and found.scopes == ("send",)
    assert found.kinds == ("invoice", "receipt") and found.test and found.rate is not None
    assert key not in admin.get("/console/api-keys").text  # shown once
    assert ("console:ada", "api_key.create", f"{found.prefix} (billing)") in audit_lines()

    revoked = admin.post(
        "/console/api-keys/revoke",
        data={"csrf_token": token, "key": str(found.id), "confirm": "yes"},
        follow_redirects=False,
    )
    assert revoked.status_code == 303
    assert authenticate(key) is None
    assert ("console:ada", "api_key.revoke", f"{found.prefix} (billing)") in audit_lines()


def test_odd_names_and_keys_get_a_clear_answer(admin: TestClient) -> None:
    token = csrf_token(admin, "/console/users")
    for path, data, status in (
        ("/console/users/role", {"name": "a\x00b", "role": "viewer"}, 400),
        ("/console/users/disable", {"name": "x" * 500}, 400),
        ("/console/users", {"name": "a\x00b", "role": "viewer", "proxy_only": "yes"}, 400),
        ("/console/api-keys", {"name": "a\x00b", "scope_send": "yes"}, 400),
        ("/console/api-keys/revoke", {"key": "a\x00b", "confirm": "yes"}, 404),
    ):
        answer = admin.post(path, data={"csrf_token": token, **data})
        assert answer.status_code == status, (path, answer.text[-400:])
