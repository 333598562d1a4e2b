"""Which photos and songs an evaluation uses: the held-out split, recomputed as training forms it.

The split is recomputed with ``model.prepare.assign_split`` from each checkpoint's stored seed and
fractions; with several checkpoints only items held out by all of them are used, so no compared
model is tested on what it was trained on. ``--limit-images`` and ``--limit-songs`` take a seeded
sample that keeps the quadrant mix (``stratified_sample``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.evaluation.errors import RetrievalEvalError

DEFAULT_IMAGES = ("oasis", "emotion6")
DEFAULT_MUSIC = ("panda4q",)


@dataclass(frozen=True)
class Photo:
    """A held-out rated photo; ``id`` is its split group, exactly as training forms it."""

    id: str
    path: Path
    source: str
    valence: float  # human rating on [0, 1]
    arousal: float
    quadrant: int


@dataclass(frozen=True)
class Song:
    """A held-out real recording; ``quadrant`` is its Panda-4Q label (1..4)."""

    id: str
    path: Path
    source: str
    quadrant: int


@dataclass(frozen=True)
class SplitSpec:
    """What decides a checkpoint's train/val/test split: its seed and fractions."""

    seed: int
    fractions: tuple[float, ...]


@dataclass
class EvalData:
    photos: list[Photo]
    songs: list[Song]
    counts: dict[str, Any] = field(default_factory=dict)


def split_spec(train_config: dict | None) -> SplitSpec:
    """Seed and ``data.split`` from a stored train config, TrainConfig() defaults for what is absent."""
    from model.config import TrainConfig

    defaults = TrainConfig()
    cfg = train_config or {}
    data = cfg.get("data") or {}
    fractions = data.get("split") or defaults.data.split
    return SplitSpec(seed=int(cfg.get("seed", defaults.seed)), fractions=tuple(float(f) for f in fractions))


def held_out_mask(groups: Sequence[str], specs: Sequence[SplitSpec], split: str) -> np.ndarray:
    """Items in ``split`` under every spec (``assign_split`` as ``model.prepare._apply_splits`` calls it)."""
    from model.prepare import SPLITS, assign_split

    arr = np.asarray(list(groups), dtype=str)
    mask = np.ones(len(arr), bool)
    if not len(arr):
        return mask
    uniq, inverse = np.unique(arr, return_inverse=True)
    for spec in specs:
        mask &= assign_split(uniq, list(spec.fractions), spec.seed)[inverse] == SPLITS[split]
    return mask


def resolve_sources(root: Path, names: Sequence[str]) -> list[str]:
    """Bare names are folders under the data root; paths and manifests are taken as given."""
    return [n if os.path.isabs(n) or os.sep in n or n.endswith(".csv") else str(Path(root) / n) for n in names]


def stratified_sample(labels: Sequence[Any], n: int, seed: int) -> np.ndarray:
    """Sorted positions of a seeded subsample of size ``n`` that keeps the label mix (largest remainder)."""
    lab = np.asarray(labels)
    if n >= len(lab):
        return np.arange(len(lab))
    classes, counts = np.unique(lab, return_counts=True)
    quota = counts * n / len(lab)
    take = np.floor(quota).astype(int)
    order = np.argsort(-(quota - take), kind="stable")
    take[order[: n - int(take.sum())]] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(lab == c), t, replace=False) for c, t in zip(classes, take, strict=True)]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, int)


def load_eval_data(
    data_root: Path,
    images: Sequence[str],
    music: Sequence[str],
    specs: Sequence[SplitSpec],
    split: str = "test",
    *,
    limit_images: int | None = None,
    limit_songs: int | None = None,
    seed: int = 0,
) -> EvalData:
    """Held-out photos (human VA) and real songs (quadrants), optionally a stratified subsample."""
    from model.datasets import load_source
    from model.prepare import quadrant

    image_items: list = []
    music_items: list = []
    reports: list = []
    for spec in resolve_sources(data_root, images):
        items, reps = load_source(spec, "image")
        image_items += items
        reports += reps
    for spec in resolve_sources(data_root, music):
        items, reps = load_source(spec, "music")
        music_items += items
        reports += reps
    audio = [it for it in music_items if it.kind == "audio"]

    photo_groups = [f"{it.source}:{it.item_id}" for it in image_items]
    keep = held_out_mask(photo_groups, specs, split)
    va = np.array([[it.valence, it.arousal] for it in image_items], float).reshape(-1, 2)
    pq = quadrant(va) if len(va) else np.zeros(0, np.int8)
    photos = [
        Photo(g, Path(it.path), it.source, float(it.valence), float(it.arousal), int(q))
        for g, it, q, k in zip(photo_groups, image_items, pq, keep, strict=True)
        if k
    ]
    song_groups = [f"{it.source}:{it.song_id}" for it in audio]
    keep = held_out_mask(song_groups, specs, split)
    sva = np.array([[it.valence, it.arousal] for it in audio], float).reshape(-1, 2)
    sq = quadrant(sva) if len(sva) else np.zeros(0, np.int8)
    songs: list[Song] = []
    seen: set[str] = set()
    for g, it, q, k in zip(song_groups, audio, sq, keep, strict=True):
        if k and g not in seen:  # one file per song: a catalogue holds each song once
            seen.add(g)
            songs.append(Song(g, Path(it.path), it.source, int(q)))
    held = {"photos": len(photos), "songs": len(songs)}
    if limit_images is not None:
        photos = [
            photos[i] for i in stratified_sample([f"{p.source}/{p.quadrant}" for p in photos], limit_images, seed)
        ]
    if limit_songs is not None:
        songs = [songs[i] for i in stratified_sample([s.quadrant for s in songs], limit_songs, seed + 1)]
    if not photos:
        raise RetrievalEvalError(f"no {split}-split photos in {', '.join(images)} under {data_root}")
    if not songs:
        raise RetrievalEvalError(f"no {split}-split audio recordings in {', '.join(music)} under {data_root}")
    counts = {
        "loaded": {"photos": len(image_items), "audio_items": len(audio), "music_items": len(music_items)},
        "held_out": held,
        "missing_media_skipped": {r.source: r.missing for r in reports},
    }
    return EvalData(photos, songs, counts)
