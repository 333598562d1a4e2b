"""Decode and featurise one file in a worker process (pure numpy/librosa: no model, no DB).

Everything a file can do wrong becomes a :class:`Failed` with a one-line reason, so a bad file
never takes the run down.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.core.errors import one_line
from app.core.tags import read_tags
from model.audio import CLIP_SECONDS, SAMPLE_RATE, AudioDecodeError, load_audio
from model.features import SILENCE_DBFS, cut_clips


@dataclass
class Prepared:
    """Clip features of one decoded file, ready to embed."""

    job: int
    features: np.ndarray  # [n, 193, 87] float32
    starts: np.ndarray
    ends: np.ndarray
    duration: float
    n_silent: int
    n_short: int
    tags: dict[str, str] = field(default_factory=dict)
    tagger: np.ndarray | None = None  # [n, 187, 96] tagger input, when the model reads it
    seconds: float = 0.0  # decode + features wall time


@dataclass
class Failed:
    job: int
    reason: str


def init_worker(parent_pid: int | None = None) -> None:
    """One BLAS/OpenMP thread per worker (the pool is the parallelism), and exit with the parent.

    A ``kill -9`` of the indexer leaves pool workers blocked on their queues for ever; a
    watchdog thread ends a worker once its parent is gone.
    """
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except Exception:  # noqa: BLE001 - an optimisation only
        pass
    if parent_pid is not None:
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()


def _watch_parent(parent_pid: int, every_s: float = 0.5) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)
        time.sleep(every_s)


def prepare(
    job: int, path: str, hop_seconds: float, max_seconds: float | None, tagger: bool = False
) -> Prepared | Failed:
    """Decode ``path``, cut 2 s clips and compute their features, or say why not."""
    t0 = time.perf_counter()
    p = Path(path)
    try:
        if p.stat().st_size == 0:
            return Failed(job, "empty file (0 bytes)")
        y = load_audio(p, max_seconds=max_seconds)
    except AudioDecodeError as exc:
        return Failed(job, one_line(exc))
    except OSError as exc:
        return Failed(job, f"cannot read file: {exc.strerror or exc}")
    except Exception as exc:  # noqa: BLE001 - decoders fail in many ways; never abort the run
        return Failed(job, f"cannot decode: {type(exc).__name__}: {one_line(exc)}")
    duration = len(y) / SAMPLE_RATE
    if duration < CLIP_SECONDS:
        return Failed(job, f"too short ({duration:.2f} s; at least {CLIP_SECONDS:g} s needed)")
    try:
        clips = cut_clips(y, SAMPLE_RATE, hop_seconds, tagger=tagger)
    except Exception as exc:  # noqa: BLE001
        return Failed(job, f"feature extraction failed: {type(exc).__name__}: {one_line(exc)}")
    if len(clips) == 0:
        if clips.n_silent:
            return Failed(job, f"silent (every 2 s clip is below {SILENCE_DBFS:g} dBFS)")
        return Failed(job, f"too short ({duration:.2f} s; at least {CLIP_SECONDS:g} s needed)")
    return Prepared(
        job=job,
        features=clips.features,
        starts=np.asarray(clips.starts, np.float64),
        ends=np.asarray(clips.ends, np.float64),
        duration=float(duration),
        n_silent=int(clips.n_silent),
        n_short=int(clips.n_short),
        tags=read_tags(p),
        tagger=clips.tagger,
        seconds=time.perf_counter() - t0,
    )
