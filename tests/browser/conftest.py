"""The browser tier's fixtures: a headless chromium per module, and a fresh watched page per test that fails the
test on any console error or uncaught page error (browser_harness.py). The network the pages look at comes from
tests/integration/duel_network.py (anvil, the contract and real `wwwserve node run` processes), shared with
the duel integration tests, whose folder goes on sys.path here (last: it shadows nothing).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_harness import WatchedPage, chromium_path
from playwright.sync_api import Browser, sync_playwright

sys.path.append(str(Path(__file__).resolve().parents[1] / "integration"))


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """A headless chromium shared by one module's tests (ChromiumMissingError, a failure, without one)."""
    path = chromium_path()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=path, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def watched_page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[WatchedPage]:
    """A fresh page in its own context (no storage shared between tests; 1280x900, light scheme, which a test
    may change with `page.emulate_media`); the test fails if the page logged a console error or threw."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme="light")
    watched = WatchedPage(context.new_page())
    try:
        yield watched
    finally:
        context.close()
    if watched.errors:
        pytest.fail(f"{request.node.nodeid}: the page reported errors:\n  " + "\n  ".join(watched.errors),
                    pytrace=False)
