"""Fixtures for the catalogue, index and indexer tests: databases and short real music.

Import the fixtures you use explicitly (``from fixtures_catalogue import db_url``).
PostgreSQL tests get a freshly created database (dropped afterwards), so they never clash with
other test runs on the same server; an unreachable server fails them with a clear message.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

PG_ADMIN_URL = os.environ.get("PHOTOSCORE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
WESNOTH_MUSIC = Path("/usr/share/games/wesnoth/1.16/data/core/music")
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
SR = 22050


# --------------------------------------------------------------------------------- databases
def _pg_admin_engine() -> Any:
    from sqlalchemy import create_engine

    return create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    admin = _pg_admin_engine()
    name = f"photoscore_test_{uuid.uuid4().hex[:12]}"
    problem = None
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - turn any connection problem into one clear failure
        problem = str(exc).splitlines()[0]
    if problem is not None:
        admin.dispose()
        pytest.fail(
            f"PostgreSQL is unreachable at {make_url(PG_ADMIN_URL).render_as_string()}: "
            f"{problem}. Start it (pg_ctlcluster --skip-systemctl-redirect "
            f"$(ls /etc/postgresql) main start) or set PHOTOSCORE_TEST_POSTGRES_URL.",
            pytrace=False,
        )
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'catalogue.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs on SQLite and on PostgreSQL."""
    name = "pg_url" if request.param == "postgres" else "sqlite_url"
    return request.getfixturevalue(name)


@pytest.fixture
def migrated_db(db_url: str) -> str:
    from app.db import upgrade_database

    upgrade_database(db_url)
    return db_url


@pytest.fixture
def session_factory(migrated_db: str) -> Iterator[Any]:
    from app.db import make_engine, make_session_factory

    engine = make_engine(migrated_db)
    yield make_session_factory(engine)
    engine.dispose()


# ------------------------------------------------------------------------------------- audio
def real_music(seconds: float, index: int) -> np.ndarray:
    """``seconds`` of real produced music (Wesnoth's Debian-packaged soundtrack), mono 22,050 Hz.

    Falls back to a FluidSynth render of a generated MIDI tune when the package is missing.
    """
    files = sorted(p for p in WESNOTH_MUSIC.glob("*.ogg") if p.stat().st_size > 1_000_000)
    if files:
        path = files[index % len(files)]
        with sf.SoundFile(path) as f:
            offset = int((15 + 7 * (index // len(files))) * f.samplerate)
            f.seek(min(offset, max(0, f.frames - int(seconds * f.samplerate))))
            y = f.read(int(seconds * f.samplerate), dtype="float32", always_2d=True).mean(axis=1)
            sr = f.samplerate
        import librosa

        return librosa.resample(y, orig_sr=sr, target_sr=SR).astype(np.float32)
    return _fluidsynth_tune(seconds, index)


def _fluidsynth_tune(seconds: float, index: int) -> np.ndarray:
    import tempfile

    import mido

    if shutil.which("fluidsynth") is None or not SOUNDFONT.is_file():
        pytest.fail("no test music: neither Wesnoth's music nor fluidsynth + FluidR3_GM is installed")
    rng = np.random.default_rng(index)
    mid = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.Message("program_change", program=int(rng.integers(0, 80))))
    scale = [0, 2, 4, 5, 7, 9, 11, 12]
    n_notes = int(seconds * 4)
    for _ in range(n_notes):
        note = 60 + scale[int(rng.integers(0, len(scale)))]
        track.append(mido.Message("note_on", note=note, velocity=90, time=0))
        track.append(mido.Message("note_off", note=note, velocity=0, time=240))
    with tempfile.TemporaryDirectory() as tmp:
        mid_path, wav_path = Path(tmp) / "t.mid", Path(tmp) / "t.wav"
        mid.save(mid_path)
        subprocess.run(
            ["fluidsynth", "-ni", "-F", str(wav_path), "-r", str(SR), str(SOUNDFONT), str(mid_path)],
            check=True,
            capture_output=True,
        )
        y, _ = sf.read(wav_path, dtype="float32", always_2d=True)
    return y.mean(axis=1)[: int(seconds * SR)]


def write_track(path: Path, y: np.ndarray, *, tags: dict[str, str] | None = None) -> Path:
    """Write ``y`` in the format the suffix names (m4a through ffmpeg) and tag it with mutagen."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".m4a":
        wav = path.with_suffix(".tmp.wav")
        sf.write(wav, y, SR)
        subprocess.run(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(wav), "-c:a", "aac", str(path)],
            check=True,
        )
        wav.unlink()
    else:
        sf.write(path, y, SR)
    if tags:
        import mutagen

        meta = mutagen.File(path, easy=True)
        if meta.tags is None:
            meta.add_tags()
        for key, value in tags.items():
            meta[key] = value
        meta.save()
    return path


@pytest.fixture(scope="session")
def music_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five short real-music tracks in five formats, some tagged, one with a LICENSE file."""
    root = tmp_path_factory.mktemp("library")
    specs = [
        ("album/one.flac", {"title": "Battle", "artist": "Wesnoth", "album": "Core"}),
        ("album/two.ogg", {"title": "Elvish", "artist": "Wesnoth"}),
        ("three.wav", None),
        ("four.mp3", None),
        ("five.m4a", None),
    ]
    for i, (rel, tags) in enumerate(specs):
        write_track(root / rel, real_music(7.0, i), tags=tags)
    (root / "album" / "LICENSE").write_text("GPL-2.0-or-later, from the Wesnoth project")
    (root / "notes.txt").write_text("not audio")
    return root


@pytest.fixture(scope="session")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Files the indexer must skip with a reason, never abort on."""
    root = tmp_path_factory.mktemp("bad")
    (root / "empty.wav").write_bytes(b"")
    (root / "random.mp3").write_bytes(np.random.default_rng(0).bytes(20_000))
    sf.write(root / "silent.wav", np.zeros(5 * SR, np.float32), SR)
    sf.write(root / "short.wav", real_music(0.5, 1), SR)
    (root / "text.ogg").write_text("this is a text file, not Ogg Vorbis\n" * 50)
    return root
