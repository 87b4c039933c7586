"""The console as its users reach it in tests: accounts, signing in, the forms' CSRF token."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from fastapi.testclient import TestClient

PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_SIGN_IN = re.compile(r'name="sign_in_token" value="([^"]+)"')


def make_user(name: str, role: str, password: str | None = PASSWORD) -> None:
    """A console account, made as `email-worker console-users create` makes it."""
    from email_worker.db.console_users import create_user

    create_user(name, role, password)


def sign_in_form(client: TestClient) -> dict[str, str]:
    """The hidden fields of the sign-in form (its token is tied to the browser's cookie)."""
    page = client.get("/console/sign-in", follow_redirects=False)
    assert page.status_code == 200, page.text
    found = _SIGN_IN.search(page.text)
    assert found is not None, "the sign-in page has no form token"
    return {"sign_in_token": html.unescape(found.group(1))}


def sign_in(client: TestClient, name: str, password: str = PASSWORD) -> str:
    """Sign ``client`` in with the form; returns the CSRF token its forms carry."""
    answer = client.post(
        "/console/sign-in",
        data={
            "name": name,
            "password": password,
            "next": "/console/emails",
            **sign_in_form(client),
        },
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    return csrf_token(client)


def csrf_token(client: TestClient, page: str = "/console/emails") -> str:
    """The CSRF token in the forms of a console page."""
    answer = client.get(page)
    assert answer.status_code == 200, answer.text
    found = _CSRF.search(answer.text)
    assert found is not None, "the page has no form with a CSRF token"
    return html.unescape(found.group(1))


def forget_sign_in_attempts(client: redis.Redis) -> None:
    """Empty the sign-in rate limits of this test run (every test client has one address)."""
    from tests.conftest import TEST_ENV

    for key in client.scan_iter(f"*{TEST_ENV['QUEUE_NAME']}:console-sign-in:*"):
        client.delete(key)


@contextmanager
def settings_changed(**values: str) -> Iterator[None]:
    """These settings for a block (environment variables), then the test run's again."""
    import os

    from email_worker.config import reset_settings

    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    reset_settings()
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        reset_settings()


def audit_lines(limit: int = 200) -> list[tuple[str, str, str | None]]:
    """The audit log's latest lines as (actor, action, target), newest first."""
    from email_worker.db.audit import recent

    return [(entry.actor, entry.action, entry.target) for entry in recent(limit)]
