"""Headless Chromium for the console's browser tests: Debian's ``chromium``, driven by Playwright.

Playwright's own browser downloads are never used: the tests launch the executable that
the ``chromium`` package installs (``CHROMIUM`` names another), and fail saying how to
install it when it is missing.

Screenshots of the console's pages are written to ``docs/console/`` only when
``CONSOLE_SCREENSHOTS=1`` is set, so an ordinary run leaves the tracked files alone::

    CONSOLE_SCREENSHOTS=1 .venv/bin/pytest -p no:randomly tests/browser
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.paths import ROOT

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

SCREENSHOTS = ROOT / "docs" / "console"
VIEWPORT = {"width": 1280, "height": 900}


def chromium_executable() -> str:
    """The Chromium to drive; the test fails naming the package when there is none."""
    named = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    found = shutil.which(named)
    if found is None:
        pytest.fail(
            f"no Chromium at {named}: the browser tests need Debian's chromium package "
            "(apt-get install chromium), or CHROMIUM naming a Chromium executable",
            pytrace=False,
        )
    return found


@contextmanager
def headless_chromium() -> Iterator[Browser]:
    """Chromium, headless, for the length of a block."""
    from playwright.sync_api import sync_playwright

    executable = chromium_executable()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page: Page, name: str) -> Path | None:
    """Save the whole page as ``docs/console/<name>.png`` when CONSOLE_SCREENSHOTS=1 asks."""
    if os.environ.get("CONSOLE_SCREENSHOTS") != "1":
        return None
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.wait_for_load_state("networkidle")
    for frame in page.frames:
        frame.wait_for_load_state("load")
    # Chromium does not paint a frame outside the viewport: make the viewport the whole page.
    height = int(page.evaluate("document.documentElement.scrollHeight"))
    page.set_viewport_size({"width": VIEWPORT["width"], "height": height})
    page.wait_for_timeout(300)  # the frames painted, not only loaded
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(VIEWPORT)  # type: ignore[arg-type]
    return path
