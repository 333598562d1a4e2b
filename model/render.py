"""Render MIDI to audio with FluidSynth, optionally forcing one General MIDI program.

Training the music branch on MIDI sets (VGMIDI, EMOPIA) needs audio. Rendering the same
piece with several GM programs (piano 0, organ 19, acoustic guitar 24, strings 48,
flute 73, ...) varies timbre without changing the labelled emotion, a cheap augmentation.

Renders are cached: the output name carries a hash of (MIDI bytes, program, sample rate,
soundfont identity), so a second call with the same inputs returns the existing file, and
files are written to a temporary name and renamed, so a killed run never leaves a
truncated wav that later looks cached.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import mido
from tqdm import tqdm

from app.core.files import atomic_path

log = logging.getLogger(__name__)

DEFAULT_SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
#: Environment variable that overrides the default soundfont.
SOUNDFONT_ENV = "PHOTOSCORE_SOUNDFONT"
DRUM_CHANNEL = 9  # GM percussion (channel 10, 0-based 9): program changes there pick kits
#: A few GM programs that keep a melody recognisable: piano, organ, guitar, strings, flute.
TIMBRE_PROGRAMS = (0, 19, 24, 48, 73)


class RenderError(RuntimeError):
    """FluidSynth missing, soundfont missing, unreadable MIDI, or a failed render."""


def resolve_soundfont(soundfont: str | Path | None = None) -> Path:
    """Soundfont to use: the argument, else ``$PHOTOSCORE_SOUNDFONT``, else FluidR3_GM."""
    path = Path(soundfont or os.environ.get(SOUNDFONT_ENV) or DEFAULT_SOUNDFONT)
    if not path.is_file():
        raise RenderError(f"soundfont not found: {path} (install `fluid-soundfont-gm` or set {SOUNDFONT_ENV})")
    return path


def _fluidsynth() -> str:
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise RenderError(
            "fluidsynth is not installed or not on PATH; install it with "
            "`apt-get install -y fluidsynth fluid-soundfont-gm`"
        )
    return exe


def render_key(
    midi_bytes: bytes, program: int | None, sr: int, soundfont: Path, max_seconds: float | None = None
) -> str:
    """Cache key of one render. The soundfont enters by path, size and mtime (hashing
    140 MB per render would cost more than the render)."""
    st = soundfont.stat()
    h = hashlib.sha256(midi_bytes)
    sf_id = f"{soundfont.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    h.update(f"|program={program}|sr={sr}|sf={sf_id}".encode())
    if max_seconds is not None:
        h.update(f"|max={max_seconds:g}".encode())
    return h.hexdigest()[:20]


def trim_midi(midi: mido.MidiFile, max_seconds: float) -> mido.MidiFile:
    """The first ``max_seconds`` of a piece as one track at a fixed tempo, ending with
    all-notes-off on every channel, so sustained or stuck notes cannot make FluidSynth
    render (or hang) far past the part that is used."""
    tpb, tempo = 480, 500_000
    out = mido.MidiFile(type=0, ticks_per_beat=tpb)
    track = mido.MidiTrack()
    out.tracks.append(track)
    now, last_tick = 0.0, 0
    for msg in midi:  # iteration yields delta times in seconds, tempo map applied
        now += msg.time
        if now > max_seconds:
            break
        if msg.is_meta and msg.type != "end_of_track":
            continue
        if msg.is_meta:
            break
        tick = round(mido.second2tick(now, tpb, tempo))
        track.append(msg.copy(time=tick - last_tick))
        last_tick = tick
    end_tick = round(mido.second2tick(min(now, max_seconds), tpb, tempo))
    for ch in range(16):
        for control in (64, 123, 120):  # sustain pedal up, all notes off, all sound off
            value = 0
            track.append(
                mido.Message(
                    "control_change", channel=ch, control=control, value=value, time=max(0, end_tick - last_tick)
                )
            )
            last_tick = max(last_tick, end_tick)
    return out


def _safe_stem(path: Path, limit: int = 60) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem)[-limit:].strip("._") or "midi"


def output_path(
    midi_path: str | Path,
    out_dir: str | Path,
    program: int | None = 0,
    sr: int = 22050,
    soundfont: str | Path | None = None,
    max_seconds: float | None = None,
) -> Path:
    """Where :func:`render_midi` puts (or finds) this render."""
    midi_path = Path(midi_path)
    sf = resolve_soundfont(soundfont)
    key = render_key(midi_path.read_bytes(), program, sr, sf, max_seconds)
    tag = "orig" if program is None else f"p{program:03d}"
    return Path(out_dir) / f"{_safe_stem(midi_path)}.{tag}.{sr}.{key}.wav"


def set_program(midi: mido.MidiFile, program: int) -> mido.MidiFile:
    """Force ``program`` on every non-drum channel, in place.

    Existing program changes are rewritten, and one is inserted at t=0 on each channel
    used, so a file that relies on the synth's default program changes too.
    """
    if not 0 <= program <= 127:
        raise ValueError(f"GM program must be in 0..127, not {program}")
    first_track: dict[int, int] = {}
    for t, track in enumerate(midi.tracks):
        for msg in track:
            channel = getattr(msg, "channel", None)
            if channel is None or channel == DRUM_CHANNEL:
                continue
            first_track.setdefault(channel, t)
            if msg.type == "program_change":
                msg.program = program  # in place: keeps delta times intact
    for channel, t in sorted(first_track.items(), reverse=True):
        msg = mido.Message("program_change", channel=channel, program=program, time=0)
        midi.tracks[t].insert(0, msg)
    return midi


def render_midi(
    midi_path: str | Path,
    out_dir: str | Path,
    program: int | None = 0,
    sr: int = 22050,
    soundfont: str | Path | None = None,
    timeout: float = 600.0,
    max_seconds: float | None = None,
) -> Path:
    """Render ``midi_path`` to a (stereo, 16-bit) wav at ``sr`` Hz; return its path.

    ``program`` forces that GM program on all non-drum channels (0 = acoustic grand piano,
    so piano renders are piano even where a file asks for another instrument); ``None``
    renders the file's own instruments. ``max_seconds`` renders only the start of the piece
    (see :func:`trim_midi`). Cached by content, see the module docstring.
    """
    midi_path = Path(midi_path)
    out_dir = Path(out_dir)
    if not midi_path.is_file():
        raise RenderError(f"MIDI file not found: {midi_path}")
    exe = _fluidsynth()
    sf = resolve_soundfont(soundfont)
    out = output_path(midi_path, out_dir, program, sr, sf, max_seconds)
    if out.is_file() and out.stat().st_size > 44:
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".render-", dir=out_dir) as tmp:
        src = midi_path
        if program is not None or max_seconds is not None:
            try:
                midi = mido.MidiFile(midi_path)
                if max_seconds is not None:
                    midi = trim_midi(midi, max_seconds)
            except Exception as exc:  # mido raises OSError/ValueError/EOFError/KeyError
                raise RenderError(f"cannot read MIDI {midi_path}: {exc}") from exc
            src = Path(tmp) / "in.mid"
            (set_program(midi, program) if program is not None else midi).save(src)
        with atomic_path(out, tmp=Path(tmp) / "out.wav") as tmp_wav:  # same file system: atomic
            cmd = [exe, "-ni", "-F", str(tmp_wav), "-r", str(sr), str(sf), str(src)]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                raise RenderError(f"fluidsynth timed out after {timeout:g} s on {midi_path}") from None
            if proc.returncode != 0 or not tmp_wav.is_file() or tmp_wav.stat().st_size <= 44:
                tail = (proc.stderr or proc.stdout or "").strip()[-500:]
                raise RenderError(f"fluidsynth failed on {midi_path} (exit {proc.returncode}): {tail or 'no output'}")
    return out


@dataclass(frozen=True)
class RenderResult:
    """One job of :func:`render_many`: ``wav`` on success, else ``error``."""

    source: Path
    program: int | None
    wav: Path | None
    error: str | None = None


def render_many(
    items: Iterable[object],
    out_dir: str | Path,
    programs: Sequence[int | None] = (0,),
    workers: int | None = None,
    sr: int = 22050,
    soundfont: str | Path | None = None,
    progress: bool = True,
    max_seconds: float | None = None,
    timeout: float = 120.0,
) -> list[RenderResult]:
    """Render every item (a path or anything with ``.path``) with every program.

    Threads suffice: the work happens in FluidSynth subprocesses. Failures are returned,
    not raised, so one broken file does not lose a long batch; results keep input order
    (item-major, then program).
    """
    _fluidsynth()
    sf = resolve_soundfont(soundfont)
    jobs = [
        (Path(getattr(item, "path", item)), program)  # type: ignore[arg-type]
        for item in items
        for program in programs
    ]
    workers = workers or min(8, os.cpu_count() or 1)

    def run(job: tuple[Path, int | None]) -> RenderResult:
        path, program = job
        try:
            return RenderResult(path, program, render_midi(path, out_dir, program, sr, sf, timeout, max_seconds))
        except (RenderError, OSError, ValueError) as exc:
            log.warning("render failed: %s", exc)
            return RenderResult(path, program, None, str(exc))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(tqdm(pool.map(run, jobs), total=len(jobs), desc="render", unit="file", disable=not progress))
    failed = sum(r.wav is None for r in results)
    if failed:
        log.warning("render_many: %d of %d renders failed", failed, len(results))
    return results
