"""The page tests' browser: Debian Chromium (never a downloaded one), where screenshots go, and
the photos they upload."""

from __future__ import annotations

import os
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
