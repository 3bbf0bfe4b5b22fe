"""The browser tier's harness: Debian's chromium, found and checked, and pages watched for console errors and
uncaught exceptions, with full-page screenshots under artifacts/browser/ (gitignored; .ci/run says where).

The browser is the system's `chromium` (apt), launched through Playwright's `executable_path`: nothing is
downloaded (`playwright install` is never run). Without it the tier fails with the command that installs it,
never a skip. The fixtures (conftest.py) build on this.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import ConsoleMessage, Page

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "browser"
INSTALL = "apt-get install -y chromium"


class ChromiumMissingError(RuntimeError):
    """No chromium binary: the browser tier cannot run (and must not pass by skipping)."""


def chromium_path() -> str:
    """The chromium to drive: $WWWSERVE_CHROMIUM, else `chromium` on PATH (Debian's /usr/bin/chromium)."""
    wanted = os.environ.get("WWWSERVE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not wanted or not Path(wanted).is_file():
        raise ChromiumMissingError(
            f"the browser tier needs Debian's chromium and found none ({wanted or 'chromium is not on PATH'}): "
            f"install it with `{INSTALL}` (or point WWWSERVE_CHROMIUM at a chromium binary); Playwright's own "
            "browser download is not used")
    return wanted


@dataclass
class WatchedPage:
    """A page and every console error and uncaught exception it has produced so far."""

    page: Page
    errors: list[str] = field(default_factory=list)
    # console errors about these URLs are expected (a test that blocks a URL on purpose says so); kept apart
    expected_urls: list[str] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            where = message.location
            line = f"console error: {message.text} ({where.get('url')}:{where.get('lineNumber')})"
            url = str(where.get("url") or "")
            wanted = url and any(url.endswith(suffix) for suffix in self.expected_urls)
            (self.expected if wanted else self.errors).append(line)

    def screenshot(self, name: str) -> Path:
        """A full-page screenshot at artifacts/browser/<name>.png."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path



AUDIT_JS = Path(__file__).with_name("audit.js")


def accessibility_problems(page: Page) -> list[str]:
    """What the page's current view fails of the checks in audit.js (captions, scoped headers, labels, names,
    text contrast of at least 4.5:1); an empty list when it passes them all."""
    problems: list[str] = page.evaluate(AUDIT_JS.read_text())
    return problems
