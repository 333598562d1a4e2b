"""Real songs for the tests, and audio files in every container the service reads.

Real audio: short cuts of The Battle for Wesnoth's soundtrack (GPL-2.0-or-later, Debian
`wesnoth-1.16-music`), or pieces written here with mido and rendered by FluidSynth
(`fluid-soundfont-gm`) where a caller allows that fallback.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

WESNOTH_MUSIC = Path("/usr/share/games/wesnoth/1.16/data/core/music")
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
WESNOTH_LICENSE = "GPL-2.0-or-later, from The Battle for Wesnoth"
SR = 22050


@dataclass(frozen=True)
class Song:
    """A real song file and the fields sent with it to `POST /tracks`."""

    path: Path
    title: str
    artist: str
    media_type: str = "audio/ogg"
    album: str | None = None
    license: str = WESNOTH_LICENSE


# ------------------------------------------------------------------------------- making audio
def cut(src: Path, dst: Path, seconds: float, at: float = 0.3, fmt: str = "OGG") -> None:
    """A mono `seconds`-long excerpt of a real recording, from `at` (a fraction) of its length."""
    with sf.SoundFile(src) as f:
        sr = f.samplerate
        start = max(0, min(f.frames - int(seconds * sr), int(f.frames * at)))
        f.seek(start)
        y = f.read(int(seconds * sr), dtype="float32", always_2d=True)
    subtype = {"OGG": "VORBIS", "FLAC": "PCM_16", "WAV": "PCM_16"}[fmt]
    sf.write(dst, y.mean(axis=1), sr, format=fmt, subtype=subtype)


def fluidsynth(mid_path: Path, wav_path: Path, rate: int = SR) -> None:
    """Render a MIDI file to WAV with FluidSynth and the General MIDI soundfont."""
    subprocess.run(
        ["fluidsynth", "-ni", "-F", str(wav_path), "-r", str(rate), str(SOUNDFONT), str(mid_path)],
        check=True,
        capture_output=True,
        timeout=60,
    )


def _has_fluidsynth() -> bool:
    return shutil.which("fluidsynth") is not None and SOUNDFONT.is_file()


def render_midi(dst: Path, seconds: float = 6.0, seed: int = 0) -> Path:
    """A short piece written with mido, rendered to WAV (22.05 kHz) by FluidSynth."""
    import mido

    if not _has_fluidsynth():
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
    fluidsynth(mid_path, dst)
    return dst


# ------------------------------------------------------------------------ the service's songs
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
        cut(WESNOTH_MUSIC / f"{stem}.ogg", dst, seconds, 0.3, fmt)
        songs.append(Song(dst, title, "Wesnoth", media))
    songs.append(Song(render_midi(folder / "etude.wav", seconds), "Etude", "PhotoScore tests", "audio/wav"))
    return songs


def spare_song(folder: Path, stem: str = "knolls", seconds: float = 6.0) -> Song:
    """One more real song, not in the seeded catalogue."""
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / f"{stem}.ogg"
    cut(WESNOTH_MUSIC / f"{stem}.ogg", dst, seconds, 0.4, "OGG")
    return Song(dst, stem.title(), "Wesnoth", "audio/ogg")


# --------------------------------------------------------------------------- the page's songs
# (file stem, title): moods spread over the valence-arousal plane.
PAGE_PICKS = [
    ("elvish-theme", "Elvish Theme"),
    ("battle-epic", "Battle Epic"),
    ("sad", "Sad"),
    ("love_theme", "Love Theme"),
    ("knolls", "Knolls"),  # kept back: the add-song test uploads it through the form
]
PAGE_LICENSE = f"{WESNOTH_LICENSE} (Debian wesnoth-1.16-music)"


def _render_etude(dst: Path, seed: int, seconds: float) -> None:
    """A short piano/strings piece as Ogg Vorbis: the page's fallback when no recordings."""
    import mido

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
    fluidsynth(mid_path, wav)
    y, sr = sf.read(wav, dtype="float32", always_2d=True)
    sf.write(dst, y.mean(axis=1)[: int(seconds * sr)], sr, format="OGG", subtype="VORBIS")


def make_page_songs(folder: Path, count: int = len(PAGE_PICKS), seconds: float = 20.0) -> list[Song]:
    """Short real songs as .ogg files with album and licence; a clear failure when neither
    Wesnoth's music nor FluidSynth is installed."""
    folder.mkdir(parents=True, exist_ok=True)
    songs: list[Song] = []
    if WESNOTH_MUSIC.is_dir():
        for i, (stem, title) in enumerate(PAGE_PICKS[:count]):
            dst = folder / f"{stem}.ogg"
            cut(WESNOTH_MUSIC / f"{stem}.ogg", dst, seconds)
            # Two artist names, so the page's default of two songs per artist still shows three.
            artist = "Wesnoth" if i % 2 == 0 else "Wesnoth contributors"
            songs.append(Song(dst, title, artist, album="The Battle for Wesnoth", license=PAGE_LICENSE))
        return songs
    if _has_fluidsynth():
        for i in range(count):
            dst = folder / f"etude-{i + 1}.ogg"
            _render_etude(dst, i, seconds)
            songs.append(Song(dst, f"Etude {i + 1}", "PhotoScore tests", album="Rendered MIDI", license="CC0-1.0"))
        return songs
    pytest.fail(
        "browser tests need real audio: install Debian's wesnoth-1.16-music (or fluidsynth + fluid-soundfont-gm)"
    )


# --------------------------------------------------------------- the indexer's music library
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
    import mido

    if not _has_fluidsynth():
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
        fluidsynth(mid_path, wav_path)
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
