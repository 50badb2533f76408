"""Headless Chromium for the end-to-end tests: Debian's ``chromium`` driven by Playwright.

The browser is the system's (``apt-get install chromium chromium-driver``; ``scripts/install``
does it when run as root); Playwright never downloads one (``playwright install`` is never run).
Without a browser these tests skip with the reason, except in CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from helpers import UNIT

#: The browser binary (Debian's package); ``PLEZI_CHROMIUM`` points elsewhere.
CHROMIUM = os.environ.get("PLEZI_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _missing() -> str | None:
    """Why the browser tests cannot run here, or ``None``."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing: run scripts/install as root (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing: pip install -e '.[test]'"
    return None


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """One headless Chromium for the browser tests.

    Package-scoped, not session-scoped: Playwright's sync API keeps an event loop running in the
    main thread while it is active, which would break ``asyncio.run`` in every later test."""
    reason = _missing()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"browser tests cannot run in CI: {reason}", pytrace=False)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000 * UNIT
        )
        try:
            yield chromium
        finally:
            chromium.close()


class Pages:
    """Opens pages in a fresh browser context; uncaught page errors fail the test."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context()
        self.context.set_default_timeout(10_000 * UNIT)
        self.errors: list[str] = []

    def open(self, url: str) -> Any:
        page = self.context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.goto(url)
        return page


@pytest.fixture
def pages(browser: Any) -> Iterator[Pages]:
    """``pages.open(url)``: a new tab on ``url`` (all tabs of a test share one context)."""
    opened = Pages(browser)
    try:
        yield opened
    finally:
        opened.context.close()
    assert not opened.errors, opened.errors
