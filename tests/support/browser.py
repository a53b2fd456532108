"""A real Chromium for the browser tests: Playwright's sync API on Debian's ``chromium``.

Never a downloaded browser: a machine without ``chromium`` fails these tests
(``make test`` installs it with apt as root) rather than skipping them. One browser per
test module, a fresh context (cookies, storage) per test.

Playwright's sync API runs an event loop in the test thread, which makes
Django refuse ORM calls as "async unsafe"; the tests only touch the database
between Playwright calls, so the check is switched off for them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from django.conf import settings

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1360, "height": 860}
PHONE = {"width": 390, "height": 844}

expect.set_options(timeout=5000)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium for the module; missing Chromium is a failure, not a skip."""
    path = CHROMIUM if os.path.isabs(CHROMIUM) else shutil.which(CHROMIUM)
    if not path or not os.access(path, os.X_OK):
        pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install -y chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=path, args=CHROMIUM_ARGS, headless=True, timeout=20000
        )
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Watched:
    """A page with what it logged: console lines and uncaught errors."""

    page: Page
    console: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def warnings(self, needle: str) -> list[str]:
        return [text for kind, text in self.console if kind == "warning" and needle in text]


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(viewport=DESKTOP, locale="en-US")
    context.set_default_timeout(5000)
    try:
        yield context
    finally:
        context.close()


def watch(page: Page) -> Watched:
    watched = Watched(page)
    page.on("console", lambda message: watched.console.append((message.type, message.text)))
    page.on("pageerror", lambda error: watched.errors.append(str(error)))
    return watched


def log_in(context: BrowserContext, base_url: str, user) -> None:
    """Give the context a session for ``user`` without going through the form."""
    from django.test import Client

    client = Client()
    client.force_login(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME]
    context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": cookie.value, "url": base_url}]
    )
