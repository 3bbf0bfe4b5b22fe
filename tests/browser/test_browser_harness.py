"""The browser tier's harness itself (browser_harness.py): a page's console errors and uncaught exceptions are
caught (the explorer's tests fail on them), and a missing chromium is a failure that names the command installing
it."""

from __future__ import annotations

import pytest
from browser_harness import ChromiumMissingError, WatchedPage, accessibility_problems, chromium_path
from playwright.sync_api import Browser

pytestmark = pytest.mark.browser


def test_console_errors_and_page_errors_are_collected(browser: Browser) -> None:
    context = browser.new_context()
    try:
        watched = WatchedPage(context.new_page())
        watched.page.set_content("<p>quiet</p><script>console.log('fine'); console.warn('fine too')</script>")
        assert watched.errors == []
        watched.page.set_content("<script>console.error('broken: ' + 1)</script>")
        watched.page.set_content("<script>setTimeout(() => { throw new Error('thrown late') })</script>")
        watched.page.evaluate("new Promise((done) => setTimeout(done))")  # after the throwing timer has run
    finally:
        context.close()
    assert len(watched.errors) == 2, watched.errors
    assert watched.errors[0].startswith("console error: broken: 1")
    assert "thrown late" in watched.errors[1] and watched.errors[1].startswith("page error:")


def test_a_missing_chromium_fails_with_the_command_that_installs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WWWSERVE_CHROMIUM", "/nonexistent/chromium")
    with pytest.raises(ChromiumMissingError, match="apt-get install -y chromium"):
        chromium_path()
    monkeypatch.delenv("WWWSERVE_CHROMIUM")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ChromiumMissingError, match="chromium is not on PATH"):
        chromium_path()


def test_the_accessibility_audit_finds_what_it_checks(browser: Browser) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_content("<main><table><caption>Fine</caption><thead><tr><th scope='col'>a</th></tr></thead>"
                         "<tbody><tr><td>1</td></tr></tbody></table><label for='s'>Unit</label>"
                         "<select id='s'><option>ETH</option></select><button>Go</button>"
                         "<p style='color:#595959'>grey on white: 7:1</p></main>")
        assert accessibility_problems(page) == []
        page.set_content("<table><tr><th>a</th></tr></table><select></select><button></button>"
                         "<p style='color:#999'>grey on white: 2.8:1</p>"
                         "<div style='background:#222'><span style='color:#444'>dark on dark</span></div>"
                         "<button disabled style='color:#ccc'>inactive controls are exempt</button>")
        problems = accessibility_problems(page)
    finally:
        context.close()
    assert [p.split(":")[0] for p in problems] == ["table without caption", "th without scope",
                                                   "control without label", "control without a name",
                                                   "contrast 2.85", "contrast 1.63"], problems
