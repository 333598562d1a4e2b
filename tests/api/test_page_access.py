"""A page anyone can use (issue 26, part 5), in Debian Chromium against a real server.

axe-core (npm, run inside the page) checks every mode of the page, at desktop and at phone size:
no serious or critical violation. At 390 x 844 (a phone) a screenshot is kept for each mode, and
the page must not scroll sideways, the players and mood buttons must be touch-sized (44 x 44 CSS
px, WCAG 2.5.5), and the valence-arousal planes must scale to the screen. The results of every run
are written to tests/artifacts/axe-<viewport>.json.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator

import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from tests.support.browser import ARTIFACTS, axe_violations, page_photo
from tests.support.servers import LiveServer
from tests.support.video import encode_video

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
TOUCH = 44  # CSS px: WCAG 2.5.5 (AAA) and the platforms' guidance; axe's target-size asks 24
BLOCKING = {"serious", "critical"}


@pytest.fixture
def phone_or_desktop(browser, request) -> Iterator[Page]:
    context = browser.new_context(viewport=request.param, has_touch=request.param is PHONE)
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    yield pg
    context.close()


def _photos(tmp_path, kinds=("warm", "cold", "green")) -> list[str]:
    paths = []
    for i, kind in enumerate(kinds):
        path = tmp_path / f"{i}-{kind}.jpg"
        path.write_bytes(page_photo(kind))
        paths.append(str(path))
    return paths


def _modes(server: LiveServer, tmp_path) -> list[tuple[str, Callable[[Page], None]]]:
    """Each state of the page a person meets, reached as they would reach it."""
    photos = _photos(tmp_path)
    not_a_photo = tmp_path / "notes.jpg"
    not_a_photo.write_text("not a photo")

    def start(pg: Page) -> None:
        pg.goto(server.url + "/")
        pg.get_by_test_id("image-input").wait_for(state="attached")

    def results(pg: Page) -> None:
        pg.get_by_test_id("n-input").fill("3")
        pg.get_by_test_id("image-input").set_input_files(photos[0])
        pg.get_by_test_id("result-row").nth(2).wait_for()

    def steered(pg: Page) -> None:
        with pg.expect_response(lambda r: "mood=happier" in r.url):
            pg.get_by_test_id("mood-happier").click()
        pg.get_by_test_id("plot-target-point").wait_for()

    def error(pg: Page) -> None:
        pg.get_by_test_id("image-input").set_input_files(str(not_a_photo))
        pg.get_by_test_id("recommend-error").wait_for()

    def album(pg: Page) -> None:
        pg.goto(server.url + "/#album")
        pg.get_by_test_id("album-input").wait_for(state="attached")

    def album_built(pg: Page) -> None:
        pg.get_by_test_id("album-input").set_input_files(photos)
        pg.get_by_test_id("album-build").click()
        expect(pg.get_by_test_id("album-entry")).to_have_count(3)

    def video(pg: Page) -> None:
        pg.goto(server.url + "/#video")
        pg.get_by_test_id("video-input").wait_for(state="attached")

    def video_scored(pg: Page) -> None:
        clip = tmp_path / "clip.webm"
        pictures = [Image.open(io.BytesIO(page_photo(k))) for k in ("warm", "cold")]
        encode_video(clip, [(p, 3.0) for p in pictures], bit_rate=1_000_000)
        pg.get_by_test_id("video-input").set_input_files(str(clip))
        pg.get_by_test_id("video-build").click()
        expect(pg.get_by_test_id("video-scene")).to_have_count(2)
        pg.wait_for_function("() => document.querySelector('#video-audio').dataset.ready === 'true'")

    def library(pg: Page) -> None:
        pg.goto(server.url + "/#library")
        pg.get_by_test_id("track-row").first.wait_for()

    def delete_dialog(pg: Page) -> None:
        pg.get_by_test_id("track-delete").first.click()
        pg.get_by_test_id("delete-dialog").wait_for()

    return [
        ("recommend-start", start),
        ("recommend-results", results),
        ("recommend-steered", steered),
        ("recommend-error", error),
        ("album-start", album),
        ("album-playlist", album_built),
        ("video-start", video),
        ("video-soundtrack", video_scored),
        ("library", library),
        ("library-delete-dialog", delete_dialog),
    ]


def _touch_too_small(pg: Page) -> list[dict]:
    return pg.eval_on_selector_all(
        "[data-testid=play-match], [data-mood], #album-play, [data-export], [data-testid=more-songs],"
        " [data-testid=video-scene-button], #video-download, #video-build,"
        " .site-nav a, [data-testid=result-audio]",
        f"""els => els.filter(e => e.getClientRects().length).map(e => {{
              const r = e.getBoundingClientRect();
              return {{what: e.dataset.testid || e.id || e.textContent.trim(), w: r.width, h: r.height}};
            }}).filter(b => b.w < {TOUCH} || b.h < {TOUCH})""",
    )


@pytest.mark.parametrize("phone_or_desktop", [DESKTOP, PHONE], ids=["1280", "390"], indirect=True)
def test_every_mode_has_no_serious_accessibility_violation(phone_or_desktop, live_server, tmp_path):
    pg = phone_or_desktop
    width = pg.viewport_size["width"]
    report: dict[str, list[dict]] = {}
    blocking: dict[str, list[dict]] = {}
    for name, reach in _modes(live_server, tmp_path):
        reach(pg)
        found = axe_violations(pg)
        report[name] = found
        if bad := [v for v in found if v["impact"] in BLOCKING]:
            blocking[name] = bad
        if width == PHONE["width"]:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            pg.screenshot(path=str(ARTIFACTS / f"phone-{name}.png"), full_page=True)
            overflow = pg.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{name}: the page scrolls {overflow}px sideways at {width}px"
            small = _touch_too_small(pg)
            assert not small, f"{name}: targets under {TOUCH}x{TOUCH} px: {small}"
            for plane in ("va-plane", "arc-plane"):
                for box in [
                    pg.get_by_test_id(plane).nth(i).bounding_box() for i in range(pg.get_by_test_id(plane).count())
                ]:
                    if box:  # drawn: as wide as the card allows, never wider than the screen
                        assert 300 <= box["width"] <= width - 16, (name, plane, box)
                        assert box["x"] >= 0 and box["x"] + box["width"] <= width, (name, plane, box)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"axe-{width}.json").write_text(json.dumps(report, indent=1))
    assert not blocking, json.dumps(blocking, indent=1)
