"""Decode and featurise one file in a worker process (pure numpy/librosa: no model, no DB).

Steps 1 and 2 of the ingest service (``app.services.ingest``: the rules ``POST /tracks`` follows
too). Everything a file can do wrong becomes a :class:`Failed` with a one-line reason, so a bad
file never takes the run down.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from app.core.errors import one_line
from app.core.tags import read_tags
from app.services.ingest import AudioRules, PreparedSong, UnusableAudio, decode_song, featurize_song, prepared_song
from model.audio import CLIP_SECONDS, AudioDecodeError, AudioErrorReason
from model.features import SILENCE_DBFS


@dataclass(kw_only=True)
class Prepared(PreparedSong):
    """Clip features of one decoded file, ready to embed (``job``: which file)."""

    job: int
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
    rules = AudioRules(max_seconds=max_seconds, hop_seconds=hop_seconds)
    try:
        if p.stat().st_size == 0:
            return Failed(job, "empty file (0 bytes)")
        y, duration = decode_song(p, rules)
    except UnusableAudio as exc:
        return Failed(job, _unusable(exc))
    except AudioDecodeError as exc:
        return Failed(job, one_line(exc))
    except OSError as exc:
        return Failed(job, f"cannot read file: {exc.strerror or exc}")
    except Exception as exc:  # noqa: BLE001 - decoders fail in many ways; never abort the run
        return Failed(job, f"cannot decode: {type(exc).__name__}: {one_line(exc)}")
    try:
        clips = featurize_song(y, duration, rules, tagger=tagger)
    except UnusableAudio as exc:
        return Failed(job, _unusable(exc))
    except Exception as exc:  # noqa: BLE001
        return Failed(job, f"feature extraction failed: {type(exc).__name__}: {one_line(exc)}")
    song = prepared_song(clips, duration, read_tags(p))
    return Prepared(**vars(song), job=job, seconds=time.perf_counter() - t0)


def _unusable(exc: UnusableAudio) -> str:
    """The indexer's words for audio that decoded but is no song (the summary lists them)."""
    if exc.reason is AudioErrorReason.NO_CLIPS and exc.n_silent:
        return f"silent (every 2 s clip is below {SILENCE_DBFS:g} dBFS)"
    return f"too short ({exc.duration:.2f} s; at least {CLIP_SECONDS:g} s needed)"
