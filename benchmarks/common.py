"""Shared helpers: the checkpoint under test, machine facts, timers, photos, synthetic embeddings.

Every figure is measured, printed and returned as plain data; nothing here asserts a target.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import io
import json
import math
import os
import platform
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
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
    from model.features import N_FEATURES, FeatureStats
    from model.networks import CDCML, ModelConfig

    torch.manual_seed(0)
    cfg = ModelConfig(**{**SHIPPED_ARCH, **overrides})
    model = CDCML(cfg).eval()
    stats = FeatureStats(mean=np.zeros(N_FEATURES, np.float32), std=np.ones(N_FEATURES, np.float32))
    meta = CheckpointMeta(config=cfg, feature_stats=stats, name="benchmark-standin")
    save_checkpoint(path, model, meta)
    return path


# ------------------------------------------------------------------------------------ machine
def machine_info() -> dict[str, Any]:
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
    return {
        "cpu": cpu,
        "cpu_flags": flags,
        "cores": os.cpu_count(),
        "ram_gib": mem_gib,
        "os": platform.platform(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


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


def loadavg() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def rss_mib(pid: int | None = None) -> float:
    import psutil

    return psutil.Process(pid or os.getpid()).memory_info().rss / 2**20


def trim_memory() -> None:
    """Return freed heap to the OS so RSS deltas measure live data, not allocator slack."""
    gc.collect()
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


# ------------------------------------------------------------------------------------- timing
def stats_ms(seconds: list[float] | np.ndarray) -> dict[str, float]:
    """p50/p95/p99/mean/min in milliseconds (NaN for no samples)."""
    arr = np.asarray(seconds, np.float64) * 1000.0
    if arr.size == 0:
        return {k: float("nan") for k in ("p50", "p95", "p99", "mean", "min", "n")}
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "mean": float(arr.mean()),
        "min": float(arr.min()),
        "n": int(arr.size),
    }


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


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


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


# ------------------------------------------------------------------------------------ results
def save_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=_json_default))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
