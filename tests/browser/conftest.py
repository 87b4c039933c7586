"""The console in a real headless Chromium: ``email-worker web`` as a process, a real worker
consuming what it sends, the SMTP test server receiving the email.

Each test module gets one browser and one web process; each test a fresh browser context
(no cookie carries over) on empty tables. Pages are checked for errors the browser reports
(a script or a style the Content Security Policy blocked shows there).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
import redis

from tests.support.browser import VIEWPORT, headless_chromium
from tests.support.console import PASSWORD, forget_sign_in_attempts
from tests.support.web import web_process

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page

# Test sends from the Templates page may reach this domain only.
TEST_SEND_DOMAIN = "example.org"


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    with headless_chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def console_url(worker: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``email-worker web`` serving the console; the module's worker sends what it queues."""
    log = tmp_path_factory.mktemp("web") / "web.log"
    with web_process(log, ALLOWED_RECIPIENTS=f"@{TEST_SEND_DOMAIN}") as url:
        yield url


@pytest.fixture(autouse=True)
def fresh_limits(redis_client: redis.Redis) -> Iterator[None]:
    forget_sign_in_attempts(redis_client)
    yield
    forget_sign_in_attempts(redis_client)


class BrowserErrors(list[str]):
    """What the browser reported as errors on the pages of one test: a script or style the
    Content Security Policy refused, a frame it would not show. An answer's status (a 422
    page, the favicon's 404) is the test's to check, not an error here."""

    def note(self, message: ConsoleMessage) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.append(message.text)


@pytest.fixture
def browser_errors() -> BrowserErrors:
    return BrowserErrors()


@pytest.fixture
def page(
    chromium: Browser, console_url: str, clean_tables: None, browser_errors: BrowserErrors
) -> Iterator[Page]:
    """A page of a new browser context, with the console as its base URL."""
    context = chromium.new_context(base_url=console_url, viewport=VIEWPORT)  # type: ignore[arg-type]
    context.set_default_timeout(15_000)
    tab = context.new_page()
    tab.on("console", browser_errors.note)
    yield tab
    context.close()


def sign_in(page: Page, name: str, password: str = PASSWORD) -> None:
    """Sign in with the form, as a person does; the console opens on the emails."""
    page.goto("/console/sign-in")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/console/emails**")
