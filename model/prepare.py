"""Turn labelled data sources into cached training arrays.

Rendering MIDI and computing clip features dominate CPU training time, so both are cached
on disk (renders by content hash in ``render.py``; arrays here by a hash of everything that
determines them). Splits are by image and by song, so several renders of one piece never
straddle train and test.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from app.core.files import atomic_path
from model import features
from model.audio import SAMPLE_RATE, AudioDecodeError, load_audio
from model.config import DataConfig
from model.datasets import ImageItem, LoadReport, MusicItem, clips_va, load_source
from model.features import FeatureStats, cut_clips
from model.image import ImageDecodeError, open_image
from model.pairs import split_by_group
from model.render import render_many
from model.transforms import image_pixels

log = logging.getLogger(__name__)
SPLITS = {"train": 0, "val": 1, "test": 2}
QUADRANT_VA = {(True, True): 1, (False, True): 2, (False, False): 3, (True, False): 4}


@dataclass
class ImageSet:
    pixels: np.ndarray  # uint8 [N,3,S,S]
    va: np.ndarray  # float32 [N,2]
    ids: np.ndarray  # str [N]
    sources: np.ndarray  # str [N]
    split: np.ndarray  # int8 [N]


@dataclass
class MusicSet:
    features: np.ndarray  # float16 [N,193,87]
    va: np.ndarray  # float32 [N,2]
    weak: np.ndarray  # bool [N]
    song: np.ndarray  # str [N]
    sources: np.ndarray  # str [N]
    starts: np.ndarray  # float32 [N]
    split: np.ndarray  # int8 [N]
    tagger: np.ndarray | None = None  # float16 [N,187,96] music-tagger input, when configured


@dataclass
class PreparedData:
    """Prepared arrays with the clip-feature statistics and similarity sigma a model uses:
    fitted on the training split when training, read from the checkpoint when evaluating."""

    images: ImageSet
    music: MusicSet
    summary: dict
    stats: FeatureStats
    sigma: float


def source_specs(root: str, names: list[str]) -> list[str]:
    return [n if os.path.isabs(n) or os.sep in n or n.endswith(".csv") else str(Path(root) / n) for n in names]


def _cap(items: list, cap: int | None, seed: int) -> list:
    if cap is None or len(items) <= cap:
        return items
    rng = np.random.default_rng(seed)
    keep = sorted(rng.choice(len(items), cap, replace=False))
    return [items[i] for i in keep]


def load_items(cfg: DataConfig, seed: int) -> tuple[list[ImageItem], list[MusicItem], list[LoadReport]]:
    """Load every configured source, each capped at ``max_items_per_source``."""
    images: list[ImageItem] = []
    music: list[MusicItem] = []
    reports: list[LoadReport] = []
    for spec in source_specs(cfg.root, cfg.images):
        items, reps = load_source(spec, "image")
        images += _cap(list(items), cfg.max_items_per_source, seed)
        reports += reps
    for spec in source_specs(cfg.root, cfg.music):
        items, reps = load_source(spec, "music")
        music += _cap(list(items), cfg.max_items_per_source, seed)
        reports += reps
    for rep in reports:
        log.info("%s: %d loaded, %d missing media skipped", rep.source, rep.loaded, rep.missing)
    return images, music, reports


def _decode_image(path: Path, size: int) -> np.ndarray | None:
    """Pixels exactly as the service prepares a photo: draft JPEG decode, then the shared
    :func:`model.transforms.image_pixels` transform."""
    try:
        img = open_image(path, draft_size=size)
    except (ImageDecodeError, OSError) as exc:
        log.warning("skipping image %s: %s", path, exc)
        return None
    return image_pixels(img, size)


def _featurize_job(
    job: tuple[str, float, float, bool],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None] | str:
    path, hop, max_seconds, tagger = job
    try:
        y = load_audio(path)
    except AudioDecodeError as exc:
        return f"{path}: {exc}"
    y = y[: int(max_seconds * SAMPLE_RATE)]
    clips = cut_clips(y, hop_seconds=hop, tagger=tagger)
    return (
        clips.features.astype(np.float16),
        clips.starts.astype(np.float32),
        clips.ends.astype(np.float32),
        clips.tagger.astype(np.float16) if clips.tagger is not None else None,
    )


def _cache_key(cfg: DataConfig, seed: int, image_size: int) -> str:
    """Everything that determines the arrays (sources resolved to absolute paths, so the
    same data named two ways shares a cache), including the feature code itself."""
    code = hashlib.sha256(Path(features.__file__).read_bytes()).hexdigest()
    data = asdict(cfg)
    for key in ("root", "cache_dir", "workers", "split"):
        data.pop(key)
    data["images"] = [str(Path(p).resolve()) for p in source_specs(cfg.root, cfg.images)]
    data["music"] = [str(Path(p).resolve()) for p in source_specs(cfg.root, cfg.music)]
    payload = json.dumps(
        {"data": data, "seed": seed, "image_size": image_size, "features": code, "v": 4}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def assign_split(groups: np.ndarray, fractions: list[float], seed: int) -> np.ndarray:
    """Split by group with ``split_by_group``; the assignment depends only on the set of
    groups and the seed, so ``evaluate`` on the same sources reproduces training's test split."""
    out = np.zeros(len(groups), np.int8)
    _, val, test = split_by_group(list(groups), tuple(fractions), seed)
    out[np.asarray(val, int)] = SPLITS["val"]
    out[np.asarray(test, int)] = SPLITS["test"]
    return out


def prepare(cfg: DataConfig, seed: int, image_size: int, progress: bool = True) -> tuple[ImageSet, MusicSet, dict]:
    """Build (or read from cache) the image and music arrays with their splits."""
    cache = Path(cfg.cache_dir) / f"prepared-{_cache_key(cfg, seed, image_size)}.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            images = ImageSet(**{k[4:]: z[k] for k in z.files if k.startswith("img_")})
            music = MusicSet(**{k[4:]: z[k] for k in z.files if k.startswith("mus_")})
            summary = json.loads(str(z["summary"]))
        log.info("prepared data from cache %s", cache)
        return images, music, _apply_splits(images, music, cfg, seed, summary)

    image_items, music_items, reports = load_items(cfg, seed)
    size = image_size
    pix, keep = [], []
    for i, item in enumerate(tqdm(image_items, desc="images", unit="img", disable=not progress)):
        arr = _decode_image(item.path, size)
        if arr is not None:
            pix.append(arr)
            keep.append(i)
    image_items = [image_items[i] for i in keep]
    images = ImageSet(
        pixels=np.stack(pix) if pix else np.zeros((0, 3, size, size), np.uint8),
        va=np.array([[it.valence, it.arousal] for it in image_items], np.float32).reshape(-1, 2),
        ids=np.array([f"{it.source}:{it.item_id}" for it in image_items]),
        sources=np.array([it.source for it in image_items]),
        split=np.zeros(len(image_items), np.int8),
    )

    render_dir = Path(cfg.cache_dir) / "renders"
    jobs: list[tuple[MusicItem, str]] = []
    midi = [it for it in music_items if it.kind == "midi"]
    if midi:
        programs = {it.source: (cfg.programs if it.va_series else cfg.programs[:1]) for it in midi}
        for prog in sorted({p for ps in programs.values() for p in ps}):
            todo = [it for it in midi if prog in programs[it.source]]
            for it, res in zip(
                todo,
                render_many(
                    todo, render_dir, (prog,), workers=cfg.workers, progress=progress, max_seconds=cfg.max_seconds + 2
                ),
                strict=True,
            ):
                if res.wav is not None:
                    jobs.append((it, str(res.wav)))
    jobs += [(it, str(it.path)) for it in music_items if it.kind == "audio"]

    feats, va, weak, song, sources, starts, taggers = [], [], [], [], [], [], []
    failed = 0
    with ProcessPoolExecutor(max_workers=max(1, cfg.workers)) as pool:
        results = pool.map(
            _featurize_job, [(p, cfg.clip_hop, cfg.max_seconds, cfg.tagger_input) for _, p in jobs], chunksize=4
        )
        for (item, _), res in tqdm(
            zip(jobs, results, strict=True), total=len(jobs), desc="features", unit="file", disable=not progress
        ):
            if isinstance(res, str) or len(res[0]) == 0:
                failed += 1
                continue
            f, s, e, tg = res
            feats.append(f)
            if tg is not None:
                taggers.append(tg)
            va.append(clips_va(item, s, e).astype(np.float32))
            n = len(f)
            weak += [item.weak] * n
            song += [f"{item.source}:{item.song_id}"] * n
            sources += [item.source] * n
            starts.append(s)
    music = MusicSet(
        features=np.concatenate(feats) if feats else np.zeros((0, 193, 87), np.float16),
        va=np.concatenate(va) if va else np.zeros((0, 2), np.float32),
        weak=np.array(weak, bool),
        song=np.array(song),
        sources=np.array(sources),
        starts=np.concatenate(starts) if starts else np.zeros(0, np.float32),
        split=np.zeros(len(song), np.int8),
        tagger=np.concatenate(taggers) if taggers else None,
    )
    summary = {
        "reports": [asdict(r) | {"missing_examples": r.missing_examples[:3]} for r in reports],
        "image_sources": {str(k): int(v) for k, v in zip(*np.unique(images.sources, return_counts=True), strict=True)},
        "songs": int(len(np.unique(music.song))),
        "clip_sources": {str(k): int(v) for k, v in zip(*np.unique(music.sources, return_counts=True), strict=True)},
        "music_files_failed": failed,
        "renders_programs": cfg.programs,
    }
    cache.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(cache, tmp=cache.with_suffix(".tmp.npz")) as tmp:
        np.savez(
            tmp,
            summary=json.dumps(summary),
            **{f"img_{k}": v for k, v in vars(images).items()},
            **{f"mus_{k}": v for k, v in vars(music).items() if v is not None},
        )
    return images, music, _apply_splits(images, music, cfg, seed, summary)


def _apply_splits(images: ImageSet, music: MusicSet, cfg: DataConfig, seed: int, summary: dict) -> dict:
    """Splits are recomputed (cheaply) rather than cached: by image id and by song."""
    images.split = assign_split(images.ids, cfg.split, seed)
    uniq, inverse = np.unique(music.song, return_inverse=True)
    music.split = assign_split(uniq, cfg.split, seed)[inverse]
    summary["images"] = {s: int((images.split == v).sum()) for s, v in SPLITS.items()}
    summary["clips"] = {s: int((music.split == v).sum()) for s, v in SPLITS.items()}
    return summary


def quadrant(va: np.ndarray) -> np.ndarray:
    """Russell quadrant 1..4 of VA points in [0,1] (Q1 high V/high A, counter-clockwise)."""
    hv, ha = va[:, 0] >= 0.5, va[:, 1] >= 0.5
    return np.array([QUADRANT_VA[(bool(v), bool(a))] for v, a in zip(hv, ha, strict=True)], np.int8)
