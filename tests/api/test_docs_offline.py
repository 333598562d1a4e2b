"""`/docs` and `/redoc` render with no network (issue 26, part 4), in Debian Chromium.

Every request that does not go to the server on loopback is aborted by Playwright's route
interception and recorded. The service's pages must list their operations without one such
request, under their own Content-Security-Policy (every violation is recorded too); FastAPI's
stock page (assets on a CDN) under the same block stays empty, which shows the block is real.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.openapi.docs import get_swagger_ui_html

from tests.support.servers import LiveServer

pytestmark = pytest.mark.browser

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


class Offline:
    """A browser tab whose requests leave loopback never: each is aborted and remembered."""

    def __init__(self, browser) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.blocked: list[str] = []
        self.errors: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.set_default_timeout(20_000)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("console", lambda msg: self.errors.append(msg.text) if msg.type == "error" else None)
        self.page.add_init_script(VIOLATIONS_JS)

    def violations(self) -> list[dict]:
        """Content-Security-Policy violations the page reported, as {directive, uri}."""
        return self.page.evaluate("window.__cspViolations")

    def _route(self, route) -> None:
        url = route.request.url
        if urlsplit(url).scheme in ("data", "blob") or urlsplit(url).hostname in LOOPBACK:
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort("internetdisconnected")


VIOLATIONS_JS = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation',
  e => window.__cspViolations.push({directive: e.effectiveDirective, uri: e.blockedURI}));
"""


@pytest.fixture
def offline(browser) -> Iterator[Offline]:
    tab = Offline(browser)
    yield tab
    tab.context.close()


def _operations(server: LiveServer) -> set[tuple[str, str]]:
    spec = httpx.get(server.url + "/openapi.json", timeout=30).json()
    return {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}


def test_swagger_ui_lists_every_operation_with_the_network_blocked(offline, live_server):
    expected = _operations(live_server)
    assert ("POST", "/playlist") in expected and ("GET", "/tracks/{track_id}") in expected
    page = offline.page
    page.goto(live_server.url + "/docs")
    page.locator(".opblock").first.wait_for()
    rows = page.eval_on_selector_all(
        ".opblock",
        """els => els.map(e => [
             e.querySelector('.opblock-summary-method').textContent.trim(),
             e.querySelector('.opblock-summary-path').getAttribute('data-path')])""",
    )
    shown = {(method, path) for method, path in rows}
    assert shown == expected, (expected - shown, shown - expected)
    assert page.locator(".info .title").inner_text().startswith("PhotoScore")
    # Swagger UI's own stylesheet applied (an unstyled page would not lay out operations in blocks).
    assert page.locator(".opblock").first.evaluate("e => getComputedStyle(e).borderRadius") != "0px"
    # One operation opens and shows its parameters: the UI's script works, not just its markup.
    page.locator('.opblock-summary-path[data-path="/playlist"]').click()
    page.locator(".opblock.is-open .parameters-container").first.wait_for()
    assert not offline.blocked, offline.blocked
    assert offline.violations() == []
    assert not offline.errors, offline.errors
    csp = httpx.get(live_server.url + "/docs", timeout=30).headers["content-security-policy"]
    assert "default-src 'self'" in csp and "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]


def test_redoc_lists_the_operations_with_the_network_blocked(offline, live_server):
    expected = _operations(live_server)
    page = offline.page
    page.goto(live_server.url + "/redoc")
    page.locator("[data-section-id^='operation/']").first.wait_for()
    sections = page.eval_on_selector_all(
        "[data-section-id^='operation/']", "els => els.map(e => e.getAttribute('data-section-id'))"
    )
    assert len(set(sections)) == len(expected), sections
    assert "operation/playlist" in sections and "operation/recommend" in sections
    # ReDoc's sidebar logo lives on a CDN: the page's policy refuses it inside the browser, so
    # not even that request is made (ReDoc then shows no logo), and nothing else is refused.
    assert not offline.blocked, offline.blocked
    refused = offline.violations()
    assert all(v["directive"] == "img-src" and "redoc" in v["uri"] for v in refused), refused
    assert not [e for e in offline.errors if "Content Security Policy" not in e], offline.errors


def test_the_stock_cdn_page_stays_blank_under_the_same_block(offline, live_server):
    """The control: FastAPI's default page asks a CDN for Swagger UI, which the block refuses."""
    stock = get_swagger_ui_html(openapi_url=live_server.url + "/openapi.json", title="stock").body.decode()
    page = offline.page
    page.goto(live_server.url + "/health")  # any loopback origin, so the spec request is allowed
    page.set_content(stock, wait_until="load")
    assert any(urlsplit(u).hostname not in LOOPBACK for u in offline.blocked), offline.blocked
    assert page.locator(".opblock").count() == 0
