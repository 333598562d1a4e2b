"""Shared fixtures and helpers for the service tests (import them explicitly).

Real audio: short cuts of The Battle for Wesnoth's soundtrack (GPL-2.0-or-later, Debian
`wesnoth-1.16-music`) plus one piece written here with mido and rendered by FluidSynth. Real
model: the lead's `tiny_checkpoint` (a randomly initialised, really loaded CDCML). Real servers:
`python -m app.cli_serve` (what `photoscore serve` runs) on a random loopback port.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
API_KEY = "service-test-key"
WESNOTH_MUSIC = Path("/usr/share/games/wesnoth/1.16/data/core/music")
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
WESNOTH_LICENSE = "GPL-2.0-or-later, from The Battle for Wesnoth"
PG_ADMIN_URL = os.environ.get("PHOTOSCORE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


# --------------------------------------------------------------------------------- real audio
@dataclass(frozen=True)
class Song:
    path: Path
    title: str
    artist: str
    media_type: str


def _cut(src: Path, dst: Path, seconds: float, at: float, fmt: str) -> None:
    import soundfile as sf

    with sf.SoundFile(src) as f:
        sr = f.samplerate
        start = max(0, min(f.frames - int(seconds * sr), int(f.frames * at)))
        f.seek(start)
        y = f.read(int(seconds * sr), dtype="float32", always_2d=True)
    subtype = {"OGG": "VORBIS", "FLAC": "PCM_16", "WAV": "PCM_16"}[fmt]
    sf.write(dst, y.mean(axis=1), sr, format=fmt, subtype=subtype)


def render_midi(dst: Path, seconds: float = 6.0, seed: int = 0) -> Path:
    """A short piece written with mido, rendered to WAV (22.05 kHz) by FluidSynth."""
    import mido

    if not (shutil.which("fluidsynth") and SOUNDFONT.is_file()):
        pytest.fail("service tests need fluidsynth and fluid-soundfont-gm (FluidR3_GM.sf2)")
    rng = np.random.default_rng(seed)
    mid = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    tempo = int(60e6 / 150)
    track.append(mido.MetaMessage("set_tempo", tempo=tempo))
    track.append(mido.Message("program_change", program=0, time=0))
    scale = [0, 2, 4, 5, 7, 9, 11]
    for _ in range(int(seconds * 1e6 / tempo) + 4):
        note = 60 + scale[int(rng.integers(len(scale)))]
        track.append(mido.Message("note_on", note=note, velocity=90, time=0))
        track.append(mido.Message("note_off", note=note, velocity=0, time=480))
    mid_path = dst.with_suffix(".mid")
    mid.save(mid_path)
    subprocess.run(
        ["fluidsynth", "-ni", "-F", str(dst), "-r", "22050", str(SOUNDFONT), str(mid_path)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return dst


def make_songs(folder: Path, seconds: float = 6.0) -> list[Song]:
    """Four short real songs in three containers (ogg, flac, wav)."""
    if not WESNOTH_MUSIC.is_dir():
        pytest.fail(f"service tests need real music at {WESNOTH_MUSIC} (apt-get install wesnoth-1.16-music)")
    folder.mkdir(parents=True, exist_ok=True)
    picks = [
        ("elvish-theme", "Elvish Theme", "OGG", "audio/ogg"),
        ("battle-epic", "Battle Epic", "FLAC", "audio/flac"),
        ("sad", "Sad", "OGG", "audio/ogg"),
    ]
    songs = []
    for stem, title, fmt, media in picks:
        dst = folder / f"{stem}.{fmt.lower()}"
        _cut(WESNOTH_MUSIC / f"{stem}.ogg", dst, seconds, 0.3, fmt)
        songs.append(Song(dst, title, "Wesnoth", media))
    songs.append(Song(render_midi(folder / "etude.wav", seconds), "Etude", "PhotoScore tests", "audio/wav"))
    return songs


def spare_song(folder: Path, stem: str = "knolls", seconds: float = 6.0) -> Song:
    """One more real song, not in the seeded catalogue."""
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / f"{stem}.ogg"
    _cut(WESNOTH_MUSIC / f"{stem}.ogg", dst, seconds, 0.4, "OGG")
    return Song(dst, stem.title(), "Wesnoth", "audio/ogg")


def wav_bytes(seconds: float, sr: int = 8000, silent: bool = False, seed: int = 0) -> bytes:
    import soundfile as sf

    n = int(seconds * sr)
    t = np.arange(n) / sr
    y = np.zeros(n, np.float32) if silent else (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    if not silent:
        y += 0.05 * np.random.default_rng(seed).standard_normal(n).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, y, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


# ------------------------------------------------------------------------------------- images
def photo_bytes(kind: str = "warm", size: tuple[int, int] = (320, 240), fmt: str = "JPEG") -> bytes:
    """A photo-like image (gradient sky, sun, hill) made with Pillow."""
    from PIL import Image, ImageDraw

    w, h = size
    top, bottom = {
        "warm": ((255, 170, 60), (200, 60, 80)),
        "cold": ((30, 50, 110), (10, 20, 40)),
        "green": ((150, 210, 120), (40, 110, 50)),
    }[kind]
    t = (np.arange(h, dtype=np.float32) / max(1, h - 1))[:, None, None]
    arr = (np.array(top) * (1 - t) + np.array(bottom) * t).astype(np.uint8)
    img = Image.fromarray(np.broadcast_to(arr, (h, w, 3)).copy(), "RGB")
    draw = ImageDraw.Draw(img)
    draw.ellipse([w * 0.6, h * 0.15, w * 0.8, h * 0.15 + w * 0.2], fill=(255, 240, 200))
    draw.polygon([(0, h), (w * 0.35, h * 0.55), (w * 0.7, h)], fill=(60, 40, 50))
    buf = io.BytesIO()
    if fmt == "GIF":
        img.save(buf, fmt, save_all=True, append_images=[img.rotate(90)])
    else:
        img.save(buf, fmt)
    return buf.getvalue()


def png_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# ---------------------------------------------------------------------------------- settings
def service_settings(data_dir: Path, checkpoint: Path, **overrides: Any):
    from app.settings import Settings

    values: dict[str, Any] = {  # everything explicit: PHOTOSCORE_* in the environment must not leak in
        "data_dir": data_dir,
        "database_url": f"sqlite:///{data_dir / 'photoscore.db'}",
        "index_dir": data_dir / "index",
        "audio_dir": data_dir / "audio",
        "public_reads": True,
        "micro_batching": True,
        "checkpoint": checkpoint,
        "api_keys": [API_KEY],
        "device": "cpu",
        "index_sync_seconds": 0.5,
    }
    values.update(overrides)
    return Settings(**values)


def add_song(client: Any, song: Song, **form: str) -> Any:
    data = {"title": song.title, "artist": song.artist, "license": WESNOTH_LICENSE, **form}
    return client.post(
        "/tracks",
        files={"audio": (song.path.name, song.path.read_bytes(), song.media_type)},
        data=data,
        headers={"X-API-Key": API_KEY},
    )


# ---------------------------------------------------------------------------- OpenAPI checks
def response_schema(spec: dict, path: str, method: str, code: int) -> dict:
    """The JSON schema the published OpenAPI document gives for one response."""
    responses = spec["paths"][path][method.lower()]["responses"]
    entry = responses.get(str(code))
    assert entry is not None, f"{method} {path} does not document status {code}"
    schema = entry["content"]["application/json"]["schema"]
    return {**schema, "components": spec["components"]}


def assert_matches_schema(spec: dict, path: str, method: str, response: httpx.Response) -> None:
    """Validate a response body against the OpenAPI schema ($refs resolved in the document).

    Uses `jsonschema` when installed, else `jsonschema_rs` (installed with schemathesis).
    """
    schema = response_schema(spec, path, method, response.status_code)
    body = response.json()
    try:
        import jsonschema
    except ImportError:
        import jsonschema_rs

        errors = [str(e) for e in jsonschema_rs.validator_for(schema).iter_errors(body)]
    else:
        errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(body)]
    assert not errors, f"{method} {path} -> {response.status_code} violates its schema: {errors[0]}"


# ------------------------------------------------------------------------------ real servers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log: Path

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def api_keys_env(*keys: str) -> str:
    """PHOTOSCORE_API_KEYS spelled so that Settings reads back `keys`.

    The documented form is comma separated; a pydantic-settings that JSON-decodes list fields
    first needs a JSON list instead. Ask Settings itself rather than guess.
    """
    from unittest import mock

    from app.settings import Settings

    for candidate in (",".join(keys), json.dumps(list(keys))):
        with mock.patch.dict(os.environ, {"PHOTOSCORE_API_KEYS": candidate}):
            try:
                if Settings().api_keys == list(keys):
                    return candidate
            except Exception:
                continue
    raise AssertionError("Settings cannot read PHOTOSCORE_API_KEYS from the environment")


def launch_server(log: Path, env: dict[str, str]) -> Server:
    """Start `python -m app.cli_serve` (= `photoscore serve`) on a free loopback port."""
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOSCORE_")}
    full_env.update({"PHOTOSCORE_DEVICE": "cpu", "PHOTOSCORE_API_KEYS": api_keys_env(API_KEY), **env})
    full_env.update({"PHOTOSCORE_HOST": "127.0.0.1", "PHOTOSCORE_PORT": str(port)})
    full_env.setdefault("PHOTOSCORE_LOG_LEVEL", "warning")
    out = log.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli_serve"], cwd=REPO, env=full_env, stdout=out, stderr=subprocess.STDOUT
    )
    out.close()
    return Server(f"http://127.0.0.1:{port}", proc, log)


def wait_ready(server: Server, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise AssertionError(f"server exited with {server.proc.returncode}:\n{server.logs()}")
        try:
            r = httpx.get(f"{server.url}/ready", timeout=5)
            if r.status_code == 200:
                return
            last = r.text
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.25)
    server.stop()
    raise AssertionError(f"server not ready after {timeout:.0f} s ({last}):\n{server.logs()}")


@contextlib.contextmanager
def server_group() -> Iterator[list[Server]]:
    """Collects servers started inside the block and stops them all at the end."""
    started: list[Server] = []
    try:
        yield started
    finally:
        for server in started:
            server.stop()


# ---------------------------------------------------------------------------------- PostgreSQL
def _pg_connect(admin_url: str):
    import psycopg

    plain = admin_url.replace("postgresql+psycopg://", "postgresql://")
    return psycopg.connect(plain, autocommit=True, connect_timeout=3)


def _start_local_postgres() -> None:
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if versions and shutil.which("pg_ctlcluster"):
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"],
            capture_output=True,
            timeout=60,
        )


@contextlib.contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database (created and dropped here); fails if unreachable."""
    try:
        conn = _pg_connect(PG_ADMIN_URL)
    except Exception:
        _start_local_postgres()
        try:
            conn = _pg_connect(PG_ADMIN_URL)
        except Exception as exc:
            pytest.fail(
                f"PostgreSQL is unreachable at {PG_ADMIN_URL} ({exc}); start it "
                "(`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`) "
                "or set PHOTOSCORE_TEST_POSTGRES_URL"
            )
    name = f"photoscore_test_{secrets.token_hex(4)}"
    with conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with _pg_connect(PG_ADMIN_URL) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
