"""Helpers for the reliability suite: what is stored, catalogue audits, hostile media, a private
PostgreSQL, a bounded load driver and latency/RSS figures.

The service helpers (real songs, photos, servers, settings) come from ``tests/fixtures_service.py``
and are imported, not copied.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import random
import shutil
import struct
import subprocess
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fixtures_service import Server, free_port
from sqlalchemy import func, select

from app.db import make_engine, make_session_factory
from app.models import Clip, Track, TrackEvent

# A shared, busy machine can take minutes to start a server (torch import, model load): wait
# that long rather than fail. Every deadline below scales with it.
STARTUP_TIMEOUT_S = float(os.environ.get("PHOTOSCORE_RELIABILITY_STARTUP_S", "300"))

# ------------------------------------------------------------------------------ stored state


@dataclass(frozen=True)
class Stored:
    """Everything a request could have written: DB rows, stored audio files, the live index."""

    tracks: int
    clips: int
    events: int
    audio_files: tuple[str, ...]
    index_clips: int | None = None
    index_vectors: int | None = None


def _counts(session_factory: Any) -> tuple[int, int, int]:
    with session_factory() as s:
        tracks = s.scalar(select(func.count()).select_from(Track)) or 0
        clips = s.scalar(select(func.count()).select_from(Clip)) or 0
        events = s.scalar(select(func.count()).select_from(TrackEvent)) or 0
    return int(tracks), int(clips), int(events)


def files_under(root: Path) -> tuple[str, ...]:
    """Every file below ``root`` (temporary ones included), relative, sorted."""
    root = Path(root)
    if not root.exists():
        return ()
    return tuple(sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()))


def app_stored(app: Any) -> Stored:
    """What an in-process app holds right now."""
    state = app.state
    tracks, clips, events = _counts(state.session_factory)
    live = state.live_index
    return Stored(
        tracks,
        clips,
        events,
        files_under(state.settings.resolved_audio_dir),
        index_clips=live.n_clips,
        index_vectors=len(live.index) if live.index is not None else 0,
    )


@contextlib.contextmanager
def session_factory_for(url: str) -> Iterator[Any]:
    engine = make_engine(url)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


def url_stored(url: str, audio_dir: Path) -> Stored:
    """What a database plus an audio folder hold (no live index)."""
    with session_factory_for(url) as factory:
        return Stored(*_counts(factory), files_under(audio_dir))


@dataclass
class LiveService:
    """A real `photoscore serve` process on loopback, with what it stores on disk."""

    server: Server
    data_dir: Path
    keys: tuple[str, ...]

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.data_dir / 'photoscore.db'}"

    @property
    def audio_dir(self) -> Path:
        return self.data_dir / "audio"

    def log_text(self) -> str:
        return self.server.log.read_text(errors="replace")


# --------------------------------------------------------------------------- catalogue audit


@dataclass
class Audit:
    """A catalogue's health: problems must be empty; orphans and temp files are reported."""

    tracks: dict[str, int]  # sha256 -> track id
    clip_ids: np.ndarray
    problems: list[str]
    orphan_files: list[str]
    temp_files: list[str]


def audit_catalogue(url: str, audio_dir: Path | None) -> Audit:
    """No partial track (clip rows == clip_count > 0), no duplicate content, every stored key
    present with the bytes its name promises; orphans (files no track references) listed apart."""
    problems: list[str] = []
    with session_factory_for(url) as factory, factory() as s:
        rows = s.execute(select(Track.id, Track.sha256, Track.clip_count, Track.audio_key)).all()
        per_track = dict(s.execute(select(Clip.track_id, func.count()).group_by(Clip.track_id)).all())
        clip_ids = np.array(sorted(s.scalars(select(Clip.id))), np.int64)
        dangling = s.scalar(select(func.count()).select_from(Clip).where(~Clip.track_id.in_(select(Track.id))))
    shas = Counter(r.sha256 for r in rows)
    problems += [f"duplicate content {sha[:12]} x{n}" for sha, n in shas.items() if n > 1]
    for r in rows:
        if not (r.clip_count and per_track.get(r.id, 0) == r.clip_count):
            problems.append(f"partial track {r.id}: clip_count {r.clip_count}, clip rows {per_track.get(r.id, 0)}")
    if dangling:
        problems.append(f"{dangling} clips without a track")
    referenced: set[str] = set()
    if audio_dir is not None:
        from app.storage import AudioStore

        store = AudioStore(audio_dir)
        for r in rows:
            if not r.audio_key:
                continue
            referenced.add(r.audio_key)
            path = store.path(r.audio_key)
            if not path.is_file():
                problems.append(f"track {r.id}: stored audio {r.audio_key} is missing")
            elif hashlib.sha256(path.read_bytes()).hexdigest() != r.audio_key.split(".")[0]:
                problems.append(f"track {r.id}: stored audio {r.audio_key} has other bytes")
    files = files_under(audio_dir) if audio_dir is not None else ()
    temp = [f for f in files if Path(f).name.startswith(".tmp-")]
    orphans = [f for f in files if f not in temp and Path(f).name not in referenced]
    return Audit({r.sha256: r.id for r in rows}, clip_ids, problems, orphans, temp)


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------ hostile media


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    return data[: max(16, int(len(data) * keep))]


SVG = (
    b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="4000" height="4000">'
    b'<script>alert(document.cookie)</script><rect width="100%" height="100%" fill="red"/></svg>\n'
)
HTML = b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)><script>fetch('/tracks')</script></body></html>"
SCRIPT = b"#!/bin/sh\nrm -rf / --no-preserve-root\n"
JS_AS_GIF = b"GIF89a/*\x01\x00\x01\x00*/=1;alert(document.domain)//"  # a GIF/JS polyglot header, no image


def wav_header(claimed_seconds: float, data: bytes = b"", sr: int = 8000, fmt_tag: int = 1) -> bytes:
    """A mono 16-bit WAV whose header claims ``claimed_seconds``, followed by ``data``."""
    claimed = int(claimed_seconds * sr) * 2
    fmt = struct.pack("<IHHIIHH", 16, fmt_tag, 1, sr, sr * 2, 2, 16)
    head = b"RIFF" + struct.pack("<I", 36 + claimed) + b"WAVE" + b"fmt " + fmt
    return head + b"data" + struct.pack("<I", claimed) + data


def tone_pcm16(seconds: float, sr: int = 8000, freq: float = 440.0) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t) * 32767).astype("<i2").tobytes()


def three_hour_flac(sr: int = 8000) -> bytes:
    """A real 3-hour FLAC (mostly silence, a tone every 10 minutes): ~0.3 MB, ~2 s to make."""
    import soundfile as sf

    buf = io.BytesIO()
    block = np.zeros(sr * 600, np.float32)
    block[: sr * 5] = 0.3 * np.sin(2 * np.pi * 440 * np.arange(sr * 5) / sr)
    with sf.SoundFile(buf, "w", sr, 1, format="FLAC", subtype="PCM_16") as f:
        for _ in range(18):
            f.write(block)
    return buf.getvalue()


def sparse_three_hour_wav(path: Path, sr: int = 8000) -> Path:
    """A real 3-hour 16-bit WAV (173 MB of silence) made as a sparse file: no disk, no time."""
    frames = 3 * 3600 * sr
    path.write_bytes(wav_header(3 * 3600, sr=sr))
    with path.open("r+b") as fh:
        fh.truncate(44 + frames * 2)
    return path


def midi_bytes() -> bytes:
    import mido

    mid = mido.MidiFile()
    track = mido.MidiTrack()
    mid.tracks.append(track)
    for note in (60, 64, 67, 72) * 8:
        track.append(mido.Message("note_on", note=note, velocity=80, time=0))
        track.append(mido.Message("note_off", note=note, velocity=0, time=240))
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()


def video_only_mp4(folder: Path) -> bytes:
    """An MP4 with one video stream and no audio (ffmpeg's test pattern, 3 s)."""
    out = folder / "video-only.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=5",
         "-t", "3", "-c:v", "mpeg4", str(out)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return out.read_bytes()


# --------------------------------------------------------------------------- private PostgreSQL


def postgres_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        pytest.fail("a private PostgreSQL needs initdb/pg_ctl (apt-get install postgresql)", pytrace=False)
    return found[-1].parent


class PrivatePostgres:
    """A throw-away PostgreSQL cluster on a free loopback port, ours to stop and start.

    The machine's shared cluster is never touched. PostgreSQL refuses to run as root, so as
    root everything runs as the `postgres` user in a folder it owns.
    """

    def __init__(self, password: str) -> None:
        self.bin = postgres_bin()
        self.port = free_port()
        self.password = password
        self.root = Path(tempfile.mkdtemp(prefix="photoscore-pg-", dir="/tmp"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")

    def _run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", "postgres", "--"] if self._as_postgres else []
        proc = subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise AssertionError(f"{argv[0]} failed ({proc.returncode}): {proc.stderr or proc.stdout}\n{self.logs()}")
        return proc

    def init(self) -> None:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "-N")

    def start(self) -> float:
        """Start and wait until it accepts connections; returns the seconds it took."""
        t0 = time.perf_counter()
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=60"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "60",
                  "start")  # fmt: skip
        return time.perf_counter() - t0

    def stop(self, mode: str = "immediate") -> float:
        t0 = time.perf_counter()
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")
        return time.perf_counter() - t0

    def running(self) -> bool:
        prefix = ["runuser", "-u", "postgres", "--"] if self._as_postgres else []
        return subprocess.run([*prefix, str(self.bin / "pg_ctl"), "-D", str(self.data), "status"],
                              capture_output=True).returncode == 0  # fmt: skip

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def logs(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            if self.data.exists() and self.running():
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


# ------------------------------------------------------------------------------------- figures


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


@dataclass
class Sample:
    op: str
    started: float  # seconds since the run began
    ms: float
    status: int | None  # None: no HTTP answer (connection error, timeout)
    error: str | None = None
    retry_after: str | None = None
    json_detail: bool = False  # the body was JSON with a string "detail"


@dataclass
class LoadResult:
    samples: list[Sample]
    wall_s: float
    rss_mb: dict[str, float] = field(default_factory=dict)

    def by_op(self) -> dict[str, list[Sample]]:
        out: dict[str, list[Sample]] = defaultdict(list)
        for s in self.samples:
            out[s.op].append(s)
        return out

    def statuses(self) -> dict[str, dict[str, int]]:
        return {op: dict(Counter(str(s.status) for s in ss)) for op, ss in sorted(self.by_op().items())}

    def figures(self) -> dict[str, Any]:
        ms = [s.ms for s in self.samples]
        per_op = {
            op: {"n": len(ss), "p50_ms": round(percentile([s.ms for s in ss], 50), 1),
                 "p99_ms": round(percentile([s.ms for s in ss], 99), 1)}
            for op, ss in sorted(self.by_op().items())
        }  # fmt: skip
        return {
            "requests": len(self.samples),
            "wall_s": round(self.wall_s, 1),
            "rps": round(len(self.samples) / self.wall_s, 1) if self.wall_s else 0.0,
            "p50_ms": round(percentile(ms, 50), 1),
            "p99_ms": round(percentile(ms, 99), 1),
            "per_op": per_op,
            "statuses": self.statuses(),
            **({"rss_mb": self.rss_mb} if self.rss_mb else {}),
        }


def drive(
    base_url: str,
    clients: list[Callable[[httpx.Client, random.Random], tuple[str, httpx.Response]]],
    seconds: float,
    *,
    timeout: float = 60.0,
    on_tick: Callable[[float], None] | None = None,
    stop: threading.Event | None = None,
) -> LoadResult:
    """Run each client function in its own thread, in a loop, for ``seconds``; record every call.

    Loopback only and bounded: every thread stops at the deadline, or earlier once ``stop`` is
    set (a call in flight finishes or times out after ``timeout``). ``on_tick(elapsed)`` runs
    about every 0.5 s in the caller.
    """
    stop = stop or threading.Event()
    assert base_url.startswith("http://127.0.0.1:"), "load is for loopback servers only"
    samples: list[Sample] = []
    lock = threading.Lock()
    t0 = time.perf_counter()
    deadline = t0 + seconds

    def worker(index: int, fn: Callable[[httpx.Client, random.Random], tuple[str, httpx.Response]]) -> None:
        rng = random.Random(index)
        with httpx.Client(base_url=base_url, timeout=timeout) as client:
            while time.perf_counter() < deadline and not stop.is_set():
                start = time.perf_counter()
                op, status, error, retry, detail = "?", None, None, None, False
                try:
                    op, response = fn(client, rng)
                    status, retry = response.status_code, response.headers.get("retry-after")
                    if status >= 400:
                        with contextlib.suppress(ValueError):
                            detail = isinstance(response.json().get("detail"), str)
                except httpx.HTTPError as exc:
                    op, error = getattr(exc, "op", op), f"{type(exc).__name__}: {exc}"
                    time.sleep(0.05)
                end = time.perf_counter()
                with lock:
                    samples.append(Sample(op, start - t0, (end - start) * 1000.0, status, error, retry, detail))

    threads = [threading.Thread(target=worker, args=(i, fn), daemon=True) for i, fn in enumerate(clients)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        if on_tick is not None:
            on_tick(time.perf_counter() - t0)
        for t in threads:
            t.join(timeout=0.5 / max(1, len(threads)))
    return LoadResult(samples, time.perf_counter() - t0)


def labelled(op: str, fn: Callable[[], httpx.Response]) -> tuple[str, httpx.Response]:
    """Run ``fn``; a transport error carries ``op`` so the sample is attributed."""
    try:
        return op, fn()
    except httpx.HTTPError as exc:
        exc.op = op  # type: ignore[attr-defined]
        raise


class RssSampler:
    """The server process's resident memory, sampled every ``every`` seconds in a thread."""

    def __init__(self, pid: int, every: float = 1.0) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.every = every
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = time.perf_counter()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self.samples.append((time.perf_counter() - self._t0, self.proc.memory_info().rss / 2**20))
            self._stop.wait(self.every)

    def now_mb(self) -> float:
        return self.proc.memory_info().rss / 2**20

    def __enter__(self) -> RssSampler:
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def summary(self) -> dict[str, float]:
        values = [mb for _, mb in self.samples]
        if not values:
            return {}
        return {
            "start": round(values[0], 1),
            "middle": round(values[len(values) // 2], 1),
            "end": round(values[-1], 1),
            "max": round(max(values), 1),
        }
