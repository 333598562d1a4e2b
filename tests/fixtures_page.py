"""Fixtures for the browser tests: a real server in a subprocess, real audio, Debian Chromium.

The server is the real app (`app.main:create_app`) with its own data dir, the tiny checkpoint
and one API key, seeded through `POST /tracks` with short cuts of real recordings (The Battle
for Wesnoth's soundtrack, GPL-2.0-or-later, from Debian's `wesnoth-1.16-music`), or, where that
package is missing, songs rendered from MIDI with FluidSynth. Chromium is Debian's
`/usr/bin/chromium`, driven by Playwright (never a downloaded browser).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
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
API_KEY = "test-key"
WESNOTH_MUSIC = Path("/usr/share/games/wesnoth/1.16/data/core/music")
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
WESNOTH_LICENSE = "GPL-2.0-or-later, from The Battle for Wesnoth (Debian wesnoth-1.16-music)"

# (file stem, title): moods spread over the valence-arousal plane.
WESNOTH_PICKS = [
    ("elvish-theme", "Elvish Theme"),
    ("battle-epic", "Battle Epic"),
    ("sad", "Sad"),
    ("love_theme", "Love Theme"),
    ("knolls", "Knolls"),  # kept back: the add-song test uploads it through the form
]
SEEDED = 4
CUT_SECONDS = 20.0


@dataclass
class Song:
    path: Path
    title: str
    artist: str
    album: str
    license: str


@dataclass
class LiveServer:
    url: str
    data_dir: Path
    seeded: list[dict] = field(default_factory=list)  # track JSON as the API returned it
    spare: Song | None = None  # a real song not yet in the catalogue
    log: Path | None = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cut_ogg(src: Path, dst: Path, seconds: float) -> None:
    """A `seconds`-long Ogg Vorbis excerpt from the middle of a real recording."""
    import soundfile as sf

    with sf.SoundFile(src) as f:
        sr = f.samplerate
        start = max(0, min(f.frames - int(seconds * sr), int(f.frames * 0.3)))
        f.seek(start)
        y = f.read(int(seconds * sr), dtype="float32", always_2d=True)
    sf.write(dst, y.mean(axis=1), sr, format="OGG", subtype="VORBIS")


def _render_midi(dst: Path, seed: int, seconds: float) -> None:
    """A short piano/strings piece rendered with FluidSynth: fallback when no recordings."""
    import mido
    import soundfile as sf

    rng = np.random.default_rng(seed)
    mid = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    tempo = int(60e6 / (70 + 50 * (seed % 3)))
    track.append(mido.MetaMessage("set_tempo", tempo=tempo))
    track.append(mido.Message("program_change", program=[0, 48, 24, 40][seed % 4], time=0))
    scale = [0, 2, 4, 5, 7, 9, 11] if seed % 2 == 0 else [0, 2, 3, 5, 7, 8, 10]
    root = 55 + seed
    beats = int(seconds * 1e6 / tempo) + 2
    for _ in range(beats):
        note = root + scale[int(rng.integers(len(scale)))] + 12 * int(rng.integers(2))
        track.append(mido.Message("note_on", note=note, velocity=80, time=0))
        track.append(mido.Message("note_off", note=note, velocity=0, time=480))
    mid_path = dst.with_suffix(".mid")
    mid.save(mid_path)
    wav = dst.with_suffix(".wav")
    subprocess.run(
        ["fluidsynth", "-ni", "-F", str(wav), "-r", "22050", str(SOUNDFONT), str(mid_path)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    y, sr = sf.read(wav, dtype="float32", always_2d=True)
    sf.write(dst, y.mean(axis=1)[: int(seconds * sr)], sr, format="OGG", subtype="VORBIS")


def make_songs(folder: Path, count: int = len(WESNOTH_PICKS), seconds: float = CUT_SECONDS) -> list[Song]:
    """Short real songs as .ogg files; a clear failure when neither source is installed."""
    folder.mkdir(parents=True, exist_ok=True)
    songs: list[Song] = []
    if WESNOTH_MUSIC.is_dir():
        for i, (stem, title) in enumerate(WESNOTH_PICKS[:count]):
            dst = folder / f"{stem}.ogg"
            _cut_ogg(WESNOTH_MUSIC / f"{stem}.ogg", dst, seconds)
            # Two artist names, so the page's default of two songs per artist still shows three.
            artist = "Wesnoth" if i % 2 == 0 else "Wesnoth contributors"
            songs.append(Song(dst, title, artist, "The Battle for Wesnoth", WESNOTH_LICENSE))
        return songs
    if shutil.which("fluidsynth") and SOUNDFONT.is_file():
        for i in range(count):
            dst = folder / f"etude-{i + 1}.ogg"
            _render_midi(dst, i, seconds)
            songs.append(Song(dst, f"Etude {i + 1}", "PhotoScore tests", "Rendered MIDI", "CC0-1.0"))
        return songs
    pytest.fail(
        "browser tests need real audio: install Debian's wesnoth-1.16-music (or fluidsynth + fluid-soundfont-gm)"
    )


def photo_bytes(kind: str = "warm", size: tuple[int, int] = (480, 320), fmt: str = "JPEG") -> bytes:
    """A photo-like test image (gradients and a sun disc) generated with Pillow."""
    from PIL import Image, ImageDraw, ImageFilter

    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    top, bottom = {
        "warm": ((255, 170, 60), (200, 60, 80)),
        "cold": ((30, 50, 110), (10, 20, 40)),
        "green": ((150, 210, 120), (40, 110, 50)),
    }[kind]
    t = (yy / max(1, h - 1))[..., None]
    img = (np.array(top) * (1 - t) + np.array(bottom) * t).astype(np.uint8)
    img = Image.fromarray(img, "RGB")
    draw = ImageDraw.Draw(img)
    draw.ellipse([w * 0.6, h * 0.15, w * 0.8, h * 0.15 + w * 0.2], fill=(255, 240, 200))
    draw.polygon([(0, h), (w * 0.35, h * 0.55), (w * 0.7, h)], fill=(60, 40, 50))
    img = img.filter(ImageFilter.GaussianBlur(1.5))
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def _wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            r = httpx.get(f"{url}/health", timeout=2)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.2)
    raise RuntimeError(f"server not healthy after {timeout:.0f} s ({last}):\n{log.read_text()[-4000:]}")


def api_keys_env(key: str) -> str:
    """`PHOTOSCORE_API_KEYS` for one key: the documented comma form, or JSON where this
    pydantic-settings decodes list fields as JSON before the settings' own comma splitter runs."""
    from pydantic_settings import SettingsError

    from app.settings import Settings

    saved = os.environ.get("PHOTOSCORE_API_KEYS")
    os.environ["PHOTOSCORE_API_KEYS"] = key
    try:
        return key if Settings().api_keys == [key] else json.dumps([key])
    except SettingsError:
        return json.dumps([key])
    finally:
        if saved is None:
            del os.environ["PHOTOSCORE_API_KEYS"]
        else:
            os.environ["PHOTOSCORE_API_KEYS"] = saved


def start_server(data_dir: Path, checkpoint: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {
        **os.environ,
        "PHOTOSCORE_DATA_DIR": str(data_dir),
        "PHOTOSCORE_CHECKPOINT": str(checkpoint),
        "PHOTOSCORE_API_KEYS": api_keys_env(API_KEY),
        "PHOTOSCORE_DEVICE": "cpu",
    }
    env.pop("PHOTOSCORE_DATABASE_URL", None)
    cmd = [
        sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc, log)
    except BaseException:
        proc.kill()
        proc.wait(10)
        raise
    return proc, url


def seed(url: str, songs: list[Song]) -> list[dict]:
    tracks = []
    with httpx.Client(base_url=url, timeout=120, headers={"X-API-Key": API_KEY}) as client:
        for song in songs:
            with song.path.open("rb") as fh:
                r = client.post(
                    "/tracks",
                    files={"audio": (song.path.name, fh, "audio/ogg")},
                    data={"title": song.title, "artist": song.artist, "album": song.album,
                          "license": song.license},
                )  # fmt: skip
            assert r.status_code in (200, 201), r.text
            tracks.append(r.json())
    return tracks


@pytest.fixture(scope="session")
def live_server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("page-server")
    songs = make_songs(root / "songs")
    log = root / "server.log"
    proc, url = start_server(root / "data", tiny_checkpoint, log)
    try:
        server = LiveServer(url=url, data_dir=root / "data", log=log)
        server.seeded = seed(url, songs[:SEEDED])
        server.spare = songs[SEEDED]
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="session")
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
