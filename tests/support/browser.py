"""The page tests' browser: Debian Chromium (never a downloaded one), where screenshots go, and
the photos they upload."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.support import REPO
from tests.support.media import photo_bytes

ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM = Path(os.environ.get("PHOTOSCORE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--mute-audio",
]


def page_photo(kind: str = "warm", fmt: str = "JPEG") -> bytes:
    """The page tests' photo: larger than the API tests' one, and softened."""
    return photo_bytes(kind, size=(480, 320), fmt=fmt, blur=1.5)


# axe-core (npm, MPL-2.0), the accessibility engine the page is checked with inside Chromium.
# Installed once by npm into a test cache (no browser download), pinned.
AXE_VERSION = "4.14.1"
TEST_CACHE = Path(os.environ.get("PHOTOSCORE_TEST_CACHE", Path.home() / ".cache" / "photoscore-tests"))


def axe_source() -> str:
    """The text of axe.min.js, installing `axe-core@AXE_VERSION` with npm on first use."""
    folder = TEST_CACHE / f"axe-core-{AXE_VERSION}"
    script = folder / "node_modules" / "axe-core" / "axe.min.js"
    if not script.is_file():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("the accessibility tests need npm (apt-get install npm) to install axe-core")
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--prefix", str(folder), f"axe-core@{AXE_VERSION}"],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return script.read_text(encoding="utf-8")


def axe_violations(page) -> list[dict]:
    """Run axe-core (WCAG 2.x A/AA and best practices) on the page as it is now; its violations,
    each as {id, impact, help, nodes: [selector...]}."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(content=axe_source())
    return page.evaluate(
        """async () => {
          const r = await axe.run(document, {resultTypes: ['violations']});
          return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                         nodes: v.nodes.map(n => n.target.join(' '))}));
        }"""
    )
