"""Catalogue rows made directly through `app.core.catalogue`: a track with random unit clips."""

from __future__ import annotations

from typing import Any

import numpy as np

from app.core.catalogue import ClipBatch, add_track
from app.core.models import Track

DIM = 16


def clip_batch(n: int, seed: int = 0) -> ClipBatch:
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, DIM)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    starts = np.arange(n) * 2.0
    return ClipBatch(starts, starts + 2.0, rng.uniform(0, 1, (n, 2)), emb)


def add(session: Any, sha: str, n: int = 3, ckpt: str = "ck1", **kw: Any) -> tuple[Track, bool]:
    """Add a track of `n` clips whose content hash is `sha`; `kw` overrides its fields."""
    fields = dict(
        sha256=sha,
        title=f"t-{sha}",
        artist="Artist",
        album=None,
        duration=2.0 * n,
        source=f"/music/{sha}.ogg",
        audio_key=None,
        license="CC-BY-4.0",
        checkpoint_hash=ckpt,
    )
    fields.update(kw)
    return add_track(session, clips=clip_batch(n, seed=len(sha)), **fields)
