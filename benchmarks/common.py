"""Shared helpers: the checkpoint under test, machine facts, timers, photos, synthetic embeddings,
the indexer command, and saving records as JSON.

Every figure is measured, printed and returned as a record (``benchmarks.records``); nothing
here asserts a target.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import io
import json
import math
import os
import platform
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.records import Machine, Stats, to_plain

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WORKDIR = ROOT / "var" / "benchmarks"  # scratch data and the raw figures (git-ignored)
DEFAULT_DOC = ROOT / "docs" / "BENCHMARKS.md"
SERVICE_K = 256  # Settings.search_k: the candidates /recommend asks FAISS for
SHIPPED_CHECKPOINT = ROOT / "model" / "default" / "photoscore-default.safetensors"
WESNOTH_MUSIC = Path("/usr/share/games/wesnoth/1.16/data/core/music")
PHOTO_SOURCES = (
    Path("/usr/share/backgrounds/mate/nature"),
    Path("/usr/share/backgrounds"),
)
# The shipped model's architecture (model/default): what a stand-in checkpoint is built with.
SHIPPED_ARCH = {
    "image_backbone": "compact",
    "music_backbone": "compact",
    "compact_width": 16,
    "embed_dim": 128,
    "image_size": 96,
    "affect_features": True,
}


def log(msg: str) -> None:
    """Progress on stderr with a wall-clock stamp (stdout carries the figures)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Context:
    """What every benchmark needs: the checkpoint, a scratch folder and the run's budget."""

    checkpoint: Path
    checkpoint_hash: str
    checkpoint_kind: str  # "shipped", "given" or "stand-in (random weights, shipped architecture)"
    workdir: Path
    quick: bool = False
    cell_seconds: float = 12.0
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        """Something that distorted or limited a measurement; goes into the report."""
        log(f"NOTE: {text}")
        self.notes.append(text)

    @classmethod
    def for_checkpoint(
        cls, arg: str | None, workdir: Path = DEFAULT_WORKDIR, *, quick: bool = False, cell_seconds: float = 12.0
    ) -> Context:
        """A context timing ``--checkpoint`` (else the shipped model, else a stand-in) in ``workdir``."""
        from app.core.files import file_sha256

        workdir.mkdir(parents=True, exist_ok=True)
        ckpt, kind = resolve_checkpoint(arg, workdir)
        return cls(ckpt, file_sha256(ckpt), kind, workdir, quick=quick, cell_seconds=cell_seconds)


def context_from_command_line(description: str) -> Context:
    """A benchmark run on its own: the context for its ``--checkpoint`` and ``--quick`` options."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--checkpoint")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    return Context.for_checkpoint(args.checkpoint, quick=args.quick)


def resolve_checkpoint(arg: str | None, workdir: Path) -> tuple[Path, str]:
    """The checkpoint to time: ``--checkpoint``, else the shipped model, else a stand-in."""
    if arg:
        path = Path(arg).resolve()
        if not path.is_file():
            raise SystemExit(f"checkpoint not found: {path}")
        return path, "given"
    if SHIPPED_CHECKPOINT.is_file():
        return SHIPPED_CHECKPOINT, "shipped"
    # Rebuilt every run: model/networks.py may have changed since the last one.
    path = workdir / "standin-compact16-d128-s96.safetensors"
    make_standin_checkpoint(path)
    return path, "stand-in (random weights, shipped architecture)"


def make_standin_checkpoint(path: Path, **overrides: Any) -> Path:
    """A checkpoint with the shipped architecture and random weights (timings equal trained ones)."""
    import torch

    from model.checkpoint import CheckpointMeta, save_checkpoint
    from model.export import export_onnx
    from model.features import N_FEATURES, FeatureStats
    from model.networks import CDCML, ModelConfig

    torch.manual_seed(0)
    cfg = ModelConfig(**{**SHIPPED_ARCH, **overrides})
    model = CDCML(cfg).eval()
    stats = FeatureStats(mean=np.zeros(N_FEATURES, np.float32), std=np.ones(N_FEATURES, np.float32))
    meta = CheckpointMeta(config=cfg, feature_stats=stats, name="benchmark-standin")
    save_checkpoint(path, model, meta)
    export_onnx(path)
    return path


# ------------------------------------------------------------------------------------ machine
def utc_stamp() -> str:
    """The current time as the reports print it (``2026-12-01 10:44 UTC``)."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def machine_info() -> Machine:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        found = [f for f in ("avx2", "avx512f", "avx512_vnni", "amx_tile") if f" {f}" in text]
        flags = ", ".join(found)
    except OSError:
        pass
    return Machine(
        cpu=cpu, cpu_flags=flags, cores=os.cpu_count(), ram_gib=mem_gib, os=platform.platform(), date=utc_stamp()
    )


def versions() -> dict[str, str]:
    import faiss
    import fastapi
    import librosa
    import PIL
    import sqlalchemy
    import torch
    import uvicorn

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch threads": str(torch.get_num_threads()),
        "faiss": faiss.__version__,
        "fastapi": fastapi.__version__,
        "uvicorn": uvicorn.__version__,
        "numpy": np.__version__,
        "librosa": librosa.__version__,
        "pillow": PIL.__version__,
        "sqlalchemy": sqlalchemy.__version__,
        "sqlite": sqlite3.sqlite_version,
    }


def loadavg() -> list[float]:
    """1-, 5- and 15-minute load averages (NaN where the OS has none)."""
    try:
        return list(os.getloadavg())
    except OSError:
        return [float("nan")] * 3


def rss_mib(pid: int | None = None) -> float:
    import psutil

    return psutil.Process(pid or os.getpid()).memory_info().rss / 2**20


def trim_memory() -> None:
    """Return freed heap to the OS so RSS deltas measure live data, not allocator slack."""
    gc.collect()
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


# ------------------------------------------------------------------------------------- timing
def stats_ms(seconds: list[float] | np.ndarray) -> Stats:
    """p50/p95/p99/mean/min in milliseconds (NaN for no samples)."""
    arr = np.asarray(seconds, np.float64) * 1000.0
    if arr.size == 0:
        nan = float("nan")
        return Stats(p50=nan, p95=nan, p99=nan, mean=nan, min=nan, n=nan)
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return Stats(
        p50=float(p50), p95=float(p95), p99=float(p99), mean=float(arr.mean()), min=float(arr.min()), n=int(arr.size)
    )


def repeat(
    fn: Callable[[], Any], *, min_reps: int = 5, min_seconds: float = 1.0, warmup: int = 1, max_reps: int = 10_000
) -> list[float]:
    """Run ``fn`` until both ``min_reps`` and ``min_seconds`` are reached; per-call seconds."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() - start < min_seconds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def fmt(value: Any, digits: int = 1) -> str:
    """A number with thousands separators and ``digits`` decimals; ``n/a`` for None, NaN or
    infinity; anything that is not a number as it is."""
    if value is None:
        return "n/a"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(v):
        return "n/a"
    return f"{v:,.{digits}f}"


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Share of the true neighbours (rows of ``truth``) among those found (-1: no result)."""
    hits = sum(len(set(f[f >= 0].tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


# ------------------------------------------------------------------------------------- photos
def _photo_source(min_w: int = 1600, min_h: int = 1000) -> Any:
    """The most detailed (bytes per pixel) photo on the machine at least ``min_w`` x ``min_h``
    (else the most detailed one of at least 1600 x 1000): JPEG cost follows size and detail."""
    from PIL import Image

    best: tuple[tuple[bool, float], Path] | None = None
    for folder in PHOTO_SOURCES:
        if folder.is_dir():
            for path in sorted(folder.glob("*.jpg")):
                try:
                    with Image.open(path) as img:
                        w, h = img.size
                except OSError:
                    continue
                if w >= 1600 and h >= 1000:
                    rank = (w >= min_w and h >= min_h, path.stat().st_size / (w * h))
                    if best is None or rank > best[0]:
                        best = (rank, path)
    if best is not None:
        with Image.open(best[1]) as img:
            return img.convert("RGB"), str(best[1])
    rng = np.random.default_rng(0)  # no photo on this machine: a smooth synthetic scene
    yy, xx = np.mgrid[0:1200, 0:1600].astype(np.float32)
    base = np.stack([xx / 1600 * 255, yy / 1200 * 255, (xx + yy) / 2800 * 255], axis=-1)
    noise = rng.normal(0, 12, base.shape)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)), "synthetic gradient"


def photo_jpegs(width: int, height: int, count: int = 1, quality: int = 90) -> tuple[list[bytes], str]:
    """``count`` different JPEG photos of ``width``x``height`` (crops of a real photo), and its source."""
    from PIL import Image, ImageOps

    src, name = _photo_source(width, height)
    out = []
    for i in range(count):
        # Different crops (and mirror images) so requests are not byte-identical.
        w, h = src.size
        scale = 0.7 + 0.3 * ((i * 37) % 10) / 10
        cw, ch = int(w * scale), int(h * scale)
        x0 = ((i * 131) % 7) * (w - cw) // 6
        y0 = ((i * 71) % 5) * (h - ch) // 4
        img = src.crop((x0, y0, x0 + cw, y0 + ch))
        if i % 2:
            img = ImageOps.mirror(img)
        img = ImageOps.fit(img, (width, height), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality)
        out.append(buf.getvalue())
    return out, name


# ------------------------------------------------------------------------- synthetic catalogue
@dataclass(frozen=True)
class SyntheticSpec:
    """How synthetic clip embeddings are drawn (stated in the report, since ANN recall depends on it).

    Tracks are centres in a ``latent``-dimensional subspace of the ``dim``-d space (a trained
    emotion embedding is far from isotropic); a track's clips wander around its centre
    (``within``, smooth in time) and every vector gets isotropic noise (``noise``); all are
    L2-normalised like the model's outputs. Image queries are drawn like fresh track centres.
    """

    dim: int = 128
    latent: int = 16
    clips_per_track: int = 90  # a 3-minute song at a 2 s hop
    within: float = 0.45
    noise: float = 0.25
    seed: int = 1234

    def describe(self) -> str:
        return (
            f"{self.clips_per_track} clips per track; track centres ~ N(0, I) in a {self.latent}-d subspace "
            f"of R^{self.dim}; clips = centre + {self.within} x smooth within-track drift + "
            f"{self.noise} x isotropic noise, L2-normalised; queries drawn like new track centres"
        )


def _basis(spec: SyntheticSpec) -> np.ndarray:
    rng = np.random.default_rng(spec.seed)
    q, _ = np.linalg.qr(rng.standard_normal((spec.dim, spec.latent)))
    return q.T.astype(np.float32)  # [latent, dim], orthonormal rows


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def synthetic_clips(
    n_clips: int, spec: SyntheticSpec = SyntheticSpec(), out: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(track index per clip int64[n], embeddings float32[n, dim]), generated in chunks.

    ``out`` (e.g. a disk-backed ``np.memmap``) receives the embeddings when they should not be
    held in RAM (10^7 clips are 5 GB).
    """
    basis = _basis(spec)
    rng = np.random.default_rng(spec.seed + 1)
    n_tracks = max(1, math.ceil(n_clips / spec.clips_per_track))
    track_of = np.minimum(np.arange(n_clips) // spec.clips_per_track, n_tracks - 1).astype(np.int64)
    out = np.empty((n_clips, spec.dim), np.float32) if out is None else out
    chunk_tracks = 2000
    for t0 in range(0, n_tracks, chunk_tracks):
        t1 = min(n_tracks, t0 + chunk_tracks)
        rows = np.flatnonzero((track_of >= t0) & (track_of < t1))
        centres = rng.standard_normal((t1 - t0, spec.latent)).astype(np.float32)
        local = track_of[rows] - t0
        # Smooth drift: a random walk per track, rescaled to unit variance per track.
        steps = rng.standard_normal((len(rows), spec.latent)).astype(np.float32)
        walk = np.empty_like(steps)
        bounds = np.flatnonzero(np.diff(local, prepend=-1, append=t1 - t0 + 1))
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            w = np.cumsum(steps[a:b], axis=0)
            w -= w.mean(axis=0, keepdims=True)
            w /= max(float(w.std()), 1e-6)
            walk[a:b] = w
        z = centres[local] + spec.within * walk
        x = z @ basis / math.sqrt(spec.latent)
        x += spec.noise * rng.standard_normal(x.shape).astype(np.float32) / math.sqrt(spec.dim)
        out[rows] = _normalise(x)
    return track_of, out


def synthetic_queries(n: int, spec: SyntheticSpec = SyntheticSpec(), seed: int = 99) -> np.ndarray:
    """Image-like queries: fresh centres in the same subspace plus the same isotropic noise."""
    basis = _basis(spec)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, spec.latent)).astype(np.float32)
    x = z @ basis / math.sqrt(spec.latent)
    x += spec.noise * rng.standard_normal(x.shape).astype(np.float32) / math.sqrt(spec.dim)
    return _normalise(x)


# ---------------------------------------------------------------------------- indexer command
def wesnoth_tracks() -> list[Path]:
    """The real music the indexer benchmarks use (Ogg Vorbis from the Wesnoth music package)."""
    files = sorted(WESNOTH_MUSIC.glob("*.ogg"))
    if not files:
        raise SystemExit(f"no music in {WESNOTH_MUSIC} (apt-get install wesnoth-1.16-music)")
    return files


@dataclass
class IndexerCommand:
    """One ``python -m indexer`` process: its wall time and the figures of its summary."""

    wall_s: float
    xrt: float  # the run's own summary (NaN when it printed none)
    clips_per_s: float
    run_wall_s: float
    clips: int
    failed: int
    audio_s: int
    ray_execution_s: float | None  # Ray Data's "execution finished in" (Ray engine only)
    output: str


def run_indexer_command(
    files: list[Path], directory: Path, extra: list[str], env: dict[str, str] | None = None
) -> IndexerCommand:
    """``python -m indexer FILES ... EXTRA`` into a fresh SQLite catalogue and FAISS folder in
    ``directory``; raises when the command fails."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    cmd = [
        sys.executable,
        "-m",
        "indexer",
        *map(str, files),
        "--database-url",
        f"sqlite:///{(directory / 'photoscore.db').resolve()}",
        "--index-dir",
        str(directory / "index"),
        "--device",
        "cpu",
        "--no-progress",
        *extra,
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - t0
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"indexer failed ({proc.returncode}): {out[-2000:]}")

    def number(pattern: str) -> str | None:
        m = re.search(pattern, out)
        return m.group(1).replace(",", "") if m else None

    m = re.search(r"throughput\s+([0-9.,]+)x real time, ([0-9.,]+) clips/s \(wall ([0-9.,]+) s\)", out)
    audio = re.search(r"audio duration\s+(?:(\d+)h )?(\d+)m (\d+)s", out)
    ray_exec = number(r"execution finished in ([0-9.]+) seconds")
    return IndexerCommand(
        wall_s=wall,
        xrt=float(m.group(1).replace(",", "")) if m else float("nan"),
        clips_per_s=float(m.group(2).replace(",", "")) if m else float("nan"),
        run_wall_s=float(m.group(3).replace(",", "")) if m else float("nan"),
        clips=int(number(r"clips\s+([0-9,]+)") or 0),
        failed=int(number(r"tracks failed\s+([0-9,]+)") or 0),
        audio_s=(int(audio.group(1) or 0) * 3600 + int(audio.group(2)) * 60 + int(audio.group(3))) if audio else 0,
        ray_execution_s=float(ray_exec) if ray_exec else None,
        output=out,
    )


# ------------------------------------------------------------------------------------ results
def save_json(path: Path, data: Any) -> None:
    """``data`` (a record, or plain data holding records) as JSON with the records' field names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_plain(data), indent=1, default=_json_default))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
