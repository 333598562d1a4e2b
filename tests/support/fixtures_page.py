"""Fixtures for the browser tests: a real server in a subprocess, real audio, Debian Chromium.

The server is `photoscore serve` (`tests.support.servers.launch_server`) with its own data dir,
the tiny checkpoint and the test API key, seeded through `POST /tracks` with short cuts of real
recordings (The Battle for Wesnoth's soundtrack, GPL-2.0-or-later, from Debian's
`wesnoth-1.16-music`), or, where that package is missing, songs rendered from MIDI with
FluidSynth. Chromium is Debian's `/usr/bin/chromium`, driven by Playwright.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from tests.support.servers import LiveServer, launch_server, seed_tracks, server_group, wait_ready
from tests.support.songs import make_page_songs

SEEDED = 4  # songs in the catalogue; the next one is kept back as the spare


@pytest.fixture(scope="session")
def live_server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("page-server")
    songs = make_page_songs(root / "songs")
    env = {"PHOTOSCORE_DATA_DIR": str(root / "data"), "PHOTOSCORE_CHECKPOINT": str(tiny_checkpoint)}
    with server_group() as group:
        server = launch_server(root / "server.log", env)
        group.append(server)
        wait_ready(server, timeout=180)
        live = LiveServer(url=server.url, data_dir=root / "data", log=server.log)
        live.seeded = seed_tracks(server.url, songs[:SEEDED])
        live.spare = songs[SEEDED]
        yield live


# Module scope: the sync Playwright API runs an event loop on this thread while it is open, and
# later tests (asyncio.run) must not find one running.
@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.fail(f"browser tests need Debian Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, request: pytest.FixtureRequest):
    """A fresh tab (1280×900); console errors fail the test; a screenshot is kept as an artefact."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    pg.on(
        "console",
        lambda msg: (
            errors.append(f"console: {msg.text}") if msg.type == "error" and "status of 4" not in msg.text else None
        ),
    )
    pg.console_errors = errors  # type: ignore[attr-defined]
    yield pg
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        pg.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    finally:
        context.close()
