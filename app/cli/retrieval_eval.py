"""``photoscore evaluate-retrieval``: end-to-end model selection on held-out photos and songs.

Per-modality VA figures do not say whether the shipped path ranks songs well, nor whether one song
takes the first place for every photo (hubness). So, for each checkpoint, the held-out real songs
(Panda-4Q recordings of the training split's test part) are indexed with the real indexer into a
temporary catalogue, the held-out rated photos are decoded and embedded the way the service does
it, and the ranking comes from the service's own ``Ranker.recommend`` (FAISS + learned rerank).
Baselines rank the same catalogue by predicted valence-arousal (per track and per clip) and at
random. Every figure has a paired bootstrap 95 % interval over photos (the same resamples for every
method), so methods are compared on the same draws.

Beside the pooled figures: per method, the photo-quadrant x music-quadrant mix of the top 10
(where a quadrant's misses go); per checkpoint, an ablation that ranks every catalogue track by
one signal alone (embedding cosine, the learned predictor without query-bank normalisation) next
to VA distance and the shipped path; and an Emotify check (reported, never selected on) that
correlates each unseen Emotify song's mean predicted clip VA with sums of its raw GEMS votes.

The split is recomputed with ``model.prepare.assign_split`` from each checkpoint's stored seed and
fractions; with several checkpoints only items held out by all of them are used, so no compared
model is tested on what it was trained on.

Exit status: 0 after a completed run; 2 with a one-line reason when the checkpoints, data or
options cannot be used.

The metric functions (section "metrics") are pure: rankings in, numbers out, where a ranking is
a list of song positions per photo, best first.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from app.core.live_index import LiveIndex
    from app.core.settings import Settings
    from app.services.recommend import Ranker
    from model.inference import Matcher

from app.core.errors import first_line

log = logging.getLogger(__name__)

K = 10
N_BOOT = 1000
DEFAULT_IMAGES = ("oasis", "emotion6")
DEFAULT_MUSIC = ("panda4q",)
MAX_JACCARD_PHOTOS = 3000  # the pairwise Jaccard matrix is n x n; above this a seeded photo sample is used
QUADRANTS = (1, 2, 3, 4)
RANDOM = "random"
MATCH_METRICS = (f"quadrant@{K}", f"quadrant_chance@{K}", f"valence_side@{K}", f"arousal_side@{K}")
CORR_METRICS = ("spearman_valence", "spearman_arousal", "spearman_valence_pred", "spearman_arousal_pred")
HUB_METRICS = ("distinct_first", "top_first_share", f"coverage@{K}", f"jaccard@{K}")
METRICS = MATCH_METRICS + CORR_METRICS + HUB_METRICS
#: The ablation's rows: VA distance (the va-track baseline), one signal alone each, the shipped path.
ABLATION_SIGNALS = ("embedding_cosine", "learned_predictor")
ABLATION_ROWS = ("va_distance", *ABLATION_SIGNALS, "shipped")
Q2_TARGET = 0.35  # issue 28: Q2 photos' Q2 share of their top 10


class RetrievalEvalError(ValueError):
    """Input that makes the evaluation impossible; the CLI prints it as one line (exit 2)."""


# ----------------------------------------------------------------------------------------- data
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
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * n / len(labels)
    take = np.floor(quota).astype(int)
    order = np.argsort(-(quota - take), kind="stable")
    take[order[: n - int(take.sum())]] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(labels == c), t, replace=False) for c, t in zip(classes, take, strict=True)]
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


# ------------------------------------------------------------------------------------- Emotify
EMOTIFY = "emotify"
EMOTIFY_MAX_SONGS = 200
#: Emotify has no VA ratings; the check correlates predictions with these sums of raw vote shares.
EMOTIFY_AROUSAL = ("p_power", "p_tension", "p_joyful_activation")
EMOTIFY_VALENCE = (("p_joyful_activation", 1.0), ("p_sadness", -1.0))


@dataclass
class EmotifySet:
    """The Emotify songs to check (a seeded sample) and their vote targets [n, 2] (valence, arousal)."""

    directory: Path
    songs: list[Song]
    targets: np.ndarray
    info: dict[str, Any]


def resolve_emotify(choice: Path | bool, data_root: Path) -> tuple[Path | None, str | None]:
    """``(folder, None)`` to check, or ``(None, why skipped)``; a folder named explicitly must exist.

    ``True`` is the default: ``<data_root>/emotify`` when present, so a data root without it still runs.
    """
    if choice is False:
        return None, "--no-emotify"
    folder = Path(data_root) / EMOTIFY if choice is True else Path(choice)
    if folder.is_dir():
        return folder, None
    if choice is True:
        return None, f"no folder {folder}"
    raise RetrievalEvalError(f"Emotify folder not found: {folder}")


def trains_on(train_config: dict | None, source: str, data_root: Path) -> bool:
    """Whether a stored train config lists ``source`` among its music sources.

    A source counts by its folder's name or by the format ``detect_format`` finds there; songs
    named only in a manifest are not seen (the shipped configs name folders).
    """
    from model.config import TrainConfig
    from model.datasets import detect_format

    data = (train_config or {}).get("data") or {}
    names = data.get("music") or TrainConfig().data.music
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    for spec in resolve_sources(data_root, [str(n).strip() for n in names]):
        path = Path(spec)
        if path.name.lower() == source or (path.is_dir() and detect_format(path) == source):
            return True
    return False


def emotify_targets(annotations: Path) -> dict[str, tuple[float, float]]:
    """``track_id -> (valence, arousal)`` targets from the raw vote shares, not the loader's VA.

    The loader's VA places GEMS categories by a modelling choice (and trains on it); these
    sums use no placement: arousal = power + tension + joyful activation, valence = joyful
    activation - sadness.
    """
    columns = {c for c, _ in EMOTIFY_VALENCE} | set(EMOTIFY_AROUSAL) | {"track_id"}
    with open(annotations, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = columns - set(reader.fieldnames or ())
        if missing:
            raise RetrievalEvalError(f"{annotations}: no column {', '.join(sorted(missing))}")
        out: dict[str, tuple[float, float]] = {}
        for row in reader:
            try:
                valence = sum(w * float(row[c]) for c, w in EMOTIFY_VALENCE)
                arousal = sum(float(row[c]) for c in EMOTIFY_AROUSAL)
            except (TypeError, ValueError) as exc:
                raise RetrievalEvalError(f"{annotations}: track {row.get('track_id')}: {exc}") from None
            out[str(row["track_id"]).strip()] = (valence, arousal)
    return out


def load_emotify_set(
    directory: Path,
    trained_specs: Sequence[SplitSpec],
    split: str = "test",
    max_songs: int = EMOTIFY_MAX_SONGS,
    seed: int = 0,
) -> EmotifySet:
    """Emotify songs no compared checkpoint trained on, a seeded genre-stratified sample of them.

    With ``trained_specs`` (the checkpoints whose config lists Emotify) only songs in ``split``
    under each of them are kept, grouped as training groups songs (``source:song_id``); without,
    every song is unseen and eligible.
    """
    from model.datasets import load_emotify
    from model.prepare import quadrant

    directory = Path(directory)
    items, report = load_emotify(directory)
    targets = emotify_targets(directory / "annotations.csv")
    groups = [f"{it.source}:{it.song_id}" for it in items]
    keep = held_out_mask(groups, trained_specs, split) if trained_specs else np.ones(len(items), bool)
    eligible: dict[str, Any] = {}
    for g, it, k in zip(groups, items, keep, strict=True):
        if k and g not in eligible:
            eligible[g] = it
    chosen = list(eligible.items())
    chosen = [
        chosen[i] for i in stratified_sample([Path(it.path).parent.name for _, it in chosen], max_songs, seed + 2)
    ]
    va = np.array([[it.valence, it.arousal] for _, it in chosen], float).reshape(-1, 2)
    songs = [
        Song(g, Path(it.path), it.source, int(q))
        for (g, it), q in zip(chosen, quadrant(va) if len(va) else [], strict=True)
    ]
    rows = [targets.get(str(it.song_id).split(":", 1)[-1]) for _, it in chosen]
    if any(r is None for r in rows):
        raise RetrievalEvalError(f"{directory / 'annotations.csv'}: a loaded song has no vote row")
    if not songs:
        raise RetrievalEvalError(f"no Emotify song in {directory} is held out ({split} split)")
    info = {
        "dir": str(directory),
        "held_out_by": "split" if trained_specs else "not trained on",
        "split": split if trained_specs else None,
        "listed": len(items) + report.missing,
        "missing_media_skipped": report.missing,
        "eligible": len(eligible),
        "max_songs": max_songs,
        "sampled": len(songs),
        "targets": {"arousal": " + ".join(EMOTIFY_AROUSAL), "valence": "p_joyful_activation - p_sadness"},
    }
    return EmotifySet(directory, songs, np.array(rows, float).reshape(-1, 2), info)


def song_mean_va(clip_va: np.ndarray, clip_song: np.ndarray, n_songs: int) -> np.ndarray:
    """[n_songs, 2] mean of each song's clip VA (NaN for a song without clips)."""
    clip_song = np.asarray(clip_song, int)
    counts = np.bincount(clip_song, minlength=n_songs).astype(np.float64)[:, None]
    sums = np.zeros((n_songs, 2))
    np.add.at(sums, clip_song, np.asarray(clip_va, np.float64).reshape(-1, 2))
    return np.divide(sums, counts, out=np.full_like(sums, np.nan), where=counts > 0)


def emotify_figures(pred_va: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
    """Pearson and Spearman of predicted valence and arousal with the vote targets (songs with a prediction)."""
    pred, tgt = np.asarray(pred_va, float).reshape(-1, 2), np.asarray(targets, float).reshape(-1, 2)
    ok = np.isfinite(pred).all(axis=1) & np.isfinite(tgt).all(axis=1)
    out: dict[str, Any] = {"n": int(ok.sum())}
    for j, dim in enumerate(("valence", "arousal")):
        x, y = pred[ok, j], tgt[ok, j]
        out[dim] = {"pearson": pearson_r(x, y), "spearman": spearman(x, y)}
    return out


# ------------------------------------------------------------------------------------ catalogue
@dataclass
class Catalogue:
    """One checkpoint's indexed held-out songs, searchable as the service searches them."""

    directory: Path
    engine: Engine
    live: LiveIndex
    track_of_song: dict[int, int]  # song position -> track id
    song_of_track: dict[int, int]
    songs: np.ndarray  # song positions in the catalogue, ascending track id
    track_va: np.ndarray  # [len(songs), 2] the track's stored (mean clip) predicted VA
    clip_song: np.ndarray  # [n_clips] position in ``songs`` of each clip
    clip_va: np.ndarray  # [n_clips, 2] stored clip VA
    failed: list[dict[str, str]]
    index: str

    def close(self) -> None:
        self.engine.dispose()


def build_catalogue(
    matcher: Matcher,
    songs: Sequence[Song],
    directory: Path,
    settings: Settings,
    *,
    workers: int = 1,
    progress: bool | None = None,
) -> Catalogue:
    """Index ``songs`` with the code ``photoscore index`` runs, then load it as the service does."""
    from app.core.catalogue import clip_moods, track_moods
    from app.core.db import make_engine, make_session_factory, migrate_database
    from app.core.live_index import LiveIndex
    from app.core.vector_index import IndexPolicy
    from indexer.build import sync_index
    from indexer.pipeline import RunOptions, index_files
    from indexer.scan import discover

    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.iterdir()):
        raise RetrievalEvalError(f"catalogue folder {directory} is not empty; give an empty or new --workdir")
    manifest = directory / "songs.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "title"])
        writer.writerows([str(s.path.resolve()), s.id] for s in songs)
    url = f"sqlite:///{(directory / 'catalogue.db').resolve()}"
    index_dir = directory / "index"
    migrate_database(url)
    sources, rejected = discover([manifest])
    engine = make_engine(url)
    try:
        factory = make_session_factory(engine)
        summary = index_files(
            sources,
            rejected,
            session_factory=factory,
            embedder=matcher,
            options=RunOptions(hop_seconds=settings.clip_hop_seconds, workers=workers, progress=progress),
        )
        report = sync_index(
            factory,
            index_dir,
            checkpoint_hash=matcher.checkpoint_hash,
            dim=matcher.dim,
            policy=IndexPolicy.from_settings(settings),
        )
        live = LiveIndex(
            factory,
            checkpoint_hash=matcher.checkpoint_hash,
            dim=matcher.dim,
            index_dir=index_dir,
            policy=IndexPolicy.from_settings(settings),
        )
        live.load()
        position = {str(s.path.resolve()): i for i, s in enumerate(songs)}
        with factory() as session:
            tracks = track_moods(session, matcher.checkpoint_hash)
            clips = clip_moods(session, matcher.checkpoint_hash)
    except BaseException:
        engine.dispose()
        raise
    track_of_song = {position[src]: int(tid) for tid, src, _, _ in tracks if src in position}
    if len(track_of_song) != len(tracks):
        engine.dispose()
        raise RetrievalEvalError(f"catalogue in {directory} holds tracks that are not test songs")
    song_of_track = {t: s for s, t in track_of_song.items()}
    order = {int(tid): i for i, (tid, *_rest) in enumerate(tracks)}
    return Catalogue(
        directory=directory,
        engine=engine,
        live=live,
        track_of_song=track_of_song,
        song_of_track=song_of_track,
        songs=np.array([song_of_track[int(t[0])] for t in tracks], int),
        track_va=np.array([[t[2], t[3]] for t in tracks], float).reshape(-1, 2),
        clip_song=np.array([order[int(c[0])] for c in clips], int),
        clip_va=np.array([[c[1], c[2]] for c in clips], float).reshape(-1, 2),
        failed=[{"path": str(o.path), "reason": o.reason} for o in summary.failed + summary.skipped],
        index=report.describe(),
    )


# ---------------------------------------------------------------------------------- the queries
def embed_photos(matcher: Matcher, photos: Sequence[Photo], settings: Settings) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and predicted VA through the service's decode and batch-embed calls.

    ``app.services.recommend.decode_photo`` turns upload bytes into the network input, and the
    service's inference worker runs ``Matcher.embed_image_tensor`` on stacked tensors (micro-batches
    of ``batch_max_size``). A photo the service would refuse gets NaN rows.
    """

    from app.services.recommend import decode_photo
    from model.image import ImageDecodeError

    embs = np.full((len(photos), matcher.dim), np.nan, np.float32)
    vas = np.full((len(photos), 2), np.nan, np.float32)
    size = max(1, int(settings.batch_max_size))
    for start in range(0, len(photos), size):
        tensors, rows = [], []
        for i in range(start, min(start + size, len(photos))):
            try:
                tensors.append(decode_photo(photos[i].path.read_bytes(), settings.max_image_pixels, matcher.image_size))
                rows.append(i)
            except (ImageDecodeError, OSError) as exc:
                log.warning("photo %s not usable: %s", photos[i].path, exc)
        if tensors:
            e, v = matcher.embed_image_tensor(np.stack(tensors))
            embs[rows], vas[rows] = np.asarray(e, np.float32), np.asarray(v, np.float32)
    return embs, vas


def service_ranking(ranker: Ranker, emb: np.ndarray, settings: Settings, k: int = K) -> list[int]:
    """Track ids of the service's plain ranking for ``n=k`` (same call, same spare, same cut; variety off)."""
    from app.services.recommend import SPARE

    return [h.track_id for h in ranker.recommend(emb, k + SPARE, settings.search_k)][:k]


def rank_by_va(query_va: np.ndarray, item_va: np.ndarray, k: int = K) -> list[int]:
    """Positions of the k items nearest ``query_va`` (Euclidean), ties by position."""
    d = np.linalg.norm(np.asarray(item_va, float) - np.asarray(query_va, float).reshape(1, 2), axis=1)
    return [int(i) for i in np.argsort(d, kind="stable")[:k]]


def rank_by_clip_va(
    query_va: np.ndarray, clip_va: np.ndarray, clip_item: np.ndarray, n_items: int, k: int = K
) -> list[int]:
    """Positions of the k items whose nearest clip (Euclidean in VA) is nearest ``query_va``."""
    d = np.linalg.norm(np.asarray(clip_va, float) - np.asarray(query_va, float).reshape(1, 2), axis=1)
    best = np.full(n_items, np.inf)
    np.minimum.at(best, np.asarray(clip_item, int), d)
    return [int(i) for i in np.argsort(best, kind="stable")[:k]]


def random_rankings(n_photos: int, items: Sequence[int], seed: int, k: int = K) -> list[list[int]]:
    """A seeded random top-k of ``items`` per photo: the floor every method must clear."""
    rng = np.random.default_rng([seed, 7])
    items = np.asarray(items, int)
    return [[int(x) for x in items[rng.permutation(len(items))[:k]]] for _ in range(n_photos)]


def cosine_scores(photo_embs: np.ndarray, clip_embs: np.ndarray) -> np.ndarray:
    """[photos, clips] cosine similarity (both sides L2-normalised here, whatever the graphs return)."""
    a = np.asarray(photo_embs, np.float64)
    b = np.asarray(clip_embs, np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


def rank_by_track_score(scores: np.ndarray, clip_item: np.ndarray, n_items: int, k: int = K) -> list[list[int]]:
    """Per photo (row of ``scores`` [photos, clips]), the k items with the highest mean clip score.

    As the service orders tracks: the mean is rounded to ``SCORE_DECIMALS`` so float noise cannot
    reorder ties, and ties go to the lower position (the catalogue lists tracks by id). An item
    without clips is never ranked.
    """
    from app.services.recommend import SCORE_DECIMALS

    clip_item = np.asarray(clip_item, int)
    counts = np.bincount(clip_item, minlength=n_items).astype(np.float64)
    member = np.zeros((len(clip_item), n_items))
    member[np.arange(len(clip_item)), clip_item] = 1.0
    sums = np.asarray(scores, np.float64).reshape(-1, len(clip_item)) @ member
    means = np.round(np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0), SCORE_DECIMALS)
    held = np.flatnonzero(counts > 0)
    return [[int(held[j]) for j in np.argsort(-row[held], kind="stable")[:k]] for row in means]


# ------------------------------------------------------------------------------------- metrics
def quadrant_at_k(
    top: Sequence[Sequence[int]], photo_q: Sequence[int], song_q: Sequence[int], k: int = K
) -> np.ndarray:
    """Per photo: share of its top-k songs whose quadrant is the photo's."""
    song_q = np.asarray(song_q)
    return np.array([_share(song_q[list(t[:k])] == q) for t, q in zip(top, photo_q, strict=True)], float)


def quadrant_chance(photo_q: Sequence[int], catalogue_q: Sequence[int]) -> np.ndarray:
    """Per photo: expected ``quadrant_at_k`` of a random top-k, i.e. its quadrant's share of the catalogue."""
    catalogue_q = np.asarray(catalogue_q)
    share = {q: float(np.mean(catalogue_q == q)) if len(catalogue_q) else math.nan for q in QUADRANTS}
    return np.array([share.get(int(q), 0.0) for q in photo_q], float)


def quadrant_mix(
    top: Sequence[Sequence[int]], photo_q: Sequence[int] | np.ndarray, song_q: Sequence[int] | np.ndarray, k: int = K
) -> dict[str, dict[str, float]]:
    """Photo quadrant -> its photos' mean share of each music quadrant in their top k, and ``n``.

    Shows where a quadrant's misses go (the issue's target: Q2 photos' Q2 share >= 0.35). Each
    photo weighs the same, as in ``quadrant@k``, so rows sum to 1 and the diagonal weighted by
    ``n`` is ``quadrant@k``. A row without photos is NaN.
    """
    sq, pq = np.asarray(song_q), np.asarray(photo_q)
    out: dict[str, dict[str, float]] = {}
    for q in QUADRANTS:
        rows = [list(t[:k]) for t, p in zip(top, pq, strict=True) if p == q]
        shares = np.zeros((len(rows), len(QUADRANTS)))
        for i, t in enumerate(rows):
            shares[i] = [_share(sq[t] == m) for m in QUADRANTS]
        mean = shares.mean(axis=0) if len(rows) else np.full(len(QUADRANTS), math.nan)
        out[f"Q{q}"] = {"n": len(rows), **{f"Q{m}": float(v) for m, v in zip(QUADRANTS, mean, strict=True)}}
    return out


def side_at_k(
    top: Sequence[Sequence[int]], photo_high: Sequence[bool], song_high: Sequence[bool], k: int = K
) -> np.ndarray:
    """Per photo: share of its top-k songs on the photo's side (high/low) of one VA axis."""
    song_high = np.asarray(song_high, bool)
    return np.array([_share(song_high[list(t[:k])] == bool(h)) for t, h in zip(top, photo_high, strict=True)], float)


def high_share_at_k(top: Sequence[Sequence[int]], song_high: Sequence[bool], k: int = K) -> np.ndarray:
    """Per photo: share of its top-k songs on the high side of one VA axis."""
    song_high = np.asarray(song_high, bool)
    return np.array([_share(song_high[list(t[:k])]) for t in top], float)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho (average ranks for ties); NaN when either side is constant or too short."""
    from scipy.stats import rankdata

    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3:
        return math.nan
    rx, ry = rankdata(x), rankdata(y)
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def pearson_r(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Pearson's r; NaN (as ``spearman``, not ``model.metrics.pearson``'s 0) when constant or too short."""
    a, b = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def distinct_first(top: Sequence[Sequence[int]]) -> int:
    """How many different songs are ranked first over all photos (hubness: low is bad)."""
    return len({t[0] for t in top if len(t)})


def top_first_share(top: Sequence[Sequence[int]]) -> float:
    """Share of photos whose first song is the single most frequent first song (hubness: high is bad)."""
    firsts = [t[0] for t in top if len(t)]
    if not firsts:
        return math.nan
    return float(np.max(np.unique(firsts, return_counts=True)[1]) / len(firsts))


def coverage_at_k(top: Sequence[Sequence[int]], n_songs: int, k: int = K) -> float:
    """Share of the catalogue's songs that appear in at least one photo's top k."""
    return len({s for t in top for s in t[:k]}) / n_songs if n_songs else math.nan


def mean_pairwise_jaccard(top: Sequence[Sequence[int]], k: int = K) -> float:
    """Mean Jaccard similarity of the top-k sets over all pairs of photos (1: everyone gets the same)."""
    sets = [set(t[:k]) for t in top]
    values = [len(a & b) / len(a | b) for i, a in enumerate(sets) for b in sets[i + 1 :] if a | b]
    return float(np.mean(values)) if values else math.nan


def jaccard_matrix(top: Sequence[Sequence[int]], n_songs: int, k: int = K) -> np.ndarray:
    """Pairwise Jaccard of the top-k sets as a matrix (one product instead of a loop over pairs)."""
    x = incidence(top, n_songs, k).astype(np.float64)
    inter = x @ x.T
    size = x.sum(axis=1)
    union = size[:, None] + size[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def incidence(top: Sequence[Sequence[int]], n_songs: int, k: int = K) -> np.ndarray:
    """[photos, songs] bool: song in the photo's top k."""
    x = np.zeros((len(top), n_songs), bool)
    for i, t in enumerate(top):
        x[i, list(t[:k])] = True
    return x


def resampled_jaccard(jac: np.ndarray, sample: np.ndarray) -> float:
    """Mean pairwise Jaccard over a resample of photos, pairs of one photo with itself left out."""
    c = np.bincount(sample, minlength=len(jac)).astype(np.float64)
    pairs = c.sum() ** 2 - (c**2).sum()
    if pairs <= 0:
        return math.nan
    return float((c @ jac @ c - (c**2 * np.diag(jac)).sum()) / pairs)


def bootstrap_ci(
    stat: Callable[[np.ndarray], float], resamples: np.ndarray, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile interval of ``stat`` over photo resamples (rows of position arrays)."""
    values = np.array([stat(r) for r in resamples], float)
    values = values[np.isfinite(values)]
    if not len(values):
        return math.nan, math.nan
    return float(np.quantile(values, alpha / 2)), float(np.quantile(values, 1 - alpha / 2))


def bootstrap_resamples(n: int, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n] photo positions drawn with replacement; shared by all methods (paired comparison)."""
    return np.random.default_rng([seed, 11]).integers(0, n, size=(n_boot, n)) if n else np.zeros((n_boot, 0), int)


def method_metrics(
    top: Sequence[Sequence[int]],
    photos: Sequence[Photo],
    photo_pred_va: np.ndarray,
    song_q: np.ndarray,
    catalogue: Sequence[int],
    resamples: np.ndarray,
    seed: int = 0,
    k: int = K,
) -> dict[str, dict[str, float]]:
    """Every metric of one method as ``{"value", "lo", "hi"}``; ``catalogue`` lists the song positions.

    Intervals are percentile bootstrap over photos. For the count and maximum statistics of
    hubness (``distinct_first``, ``top_first_share``, ``coverage``) a resample repeats photos, so
    their intervals lean low (high for ``top_first_share``) and may exclude the value itself;
    they serve to compare methods on the same resamples, not as unbiased error bars.
    """
    photo_q = np.array([p.quadrant for p in photos])
    human = np.array([[p.valence, p.arousal] for p in photos], float).reshape(-1, 2)
    high_v_song, high_a_song = np.isin(song_q, (1, 4)), np.isin(song_q, (1, 2))
    per_photo = {
        f"quadrant@{k}": quadrant_at_k(top, photo_q, song_q, k),
        f"quadrant_chance@{k}": quadrant_chance(photo_q, song_q[np.asarray(catalogue, int)]),
        f"valence_side@{k}": side_at_k(top, human[:, 0] >= 0.5, high_v_song, k),
        f"arousal_side@{k}": side_at_k(top, human[:, 1] >= 0.5, high_a_song, k),
    }
    out: dict[str, dict[str, float]] = {}
    for name, values in per_photo.items():
        means = values[resamples].mean(axis=1) if resamples.size else np.zeros(0)
        lo, hi = np.quantile(means, [0.025, 0.975]) if len(means) else (math.nan, math.nan)
        out[name] = _ci(float(values.mean()), float(lo), float(hi))
    shares = {"valence": high_share_at_k(top, high_v_song, k), "arousal": high_share_at_k(top, high_a_song, k)}
    for j, dim in enumerate(("valence", "arousal")):
        for suffix, truth in (("", human[:, j]), ("_pred", np.asarray(photo_pred_va, float)[:, j])):
            share = shares[dim]
            out[f"spearman_{dim}{suffix}"] = _ci(
                spearman(truth, share), *bootstrap_ci(lambda r, t=truth, s=share: spearman(t[r], s[r]), resamples)
            )
    firsts = np.array([t[0] if len(t) else -1 for t in top])
    n_cat = len(catalogue)
    x = incidence(top, len(song_q), k)
    out["distinct_first"] = _ci(distinct_first(top), *bootstrap_ci(lambda r: len(np.unique(firsts[r])), resamples))
    out["top_first_share"] = _ci(
        top_first_share(top),
        *bootstrap_ci(lambda r: np.unique(firsts[r], return_counts=True)[1].max() / len(r), resamples),
    )
    out[f"coverage@{k}"] = _ci(
        coverage_at_k(top, n_cat, k), *bootstrap_ci(lambda r: x[np.unique(r)].any(axis=0).sum() / n_cat, resamples)
    )
    jac_rows, jac_resamples = np.arange(len(top)), resamples
    if len(top) > MAX_JACCARD_PHOTOS:  # the n x n matrix would not fit: a seeded sample of photos
        jac_rows = np.sort(np.random.default_rng([seed, 13]).choice(len(top), MAX_JACCARD_PHOTOS, replace=False))
        jac_resamples = bootstrap_resamples(len(jac_rows), len(resamples), seed + 1)
    jac = jaccard_matrix([top[i] for i in jac_rows], len(song_q), k)
    out[f"jaccard@{k}"] = _ci(
        resampled_jaccard(jac, np.arange(len(jac_rows))),
        *bootstrap_ci(lambda r: resampled_jaccard(jac, r), jac_resamples),
    )
    return out


def modality_figures(
    photos: Sequence[Photo], pred_va: np.ndarray, song_q: np.ndarray, catalogue: Catalogue
) -> dict[str, float]:
    """The checkpoint's VA quality on these photos and songs, beside the ranking figures."""
    from model.metrics import pearson, quadrant_auc

    human = np.array([[p.valence, p.arousal] for p in photos], float).reshape(-1, 2)
    pred = np.asarray(pred_va, float)
    out: dict[str, float] = {}
    for j, dim in enumerate(("valence", "arousal")):
        out[f"image_{dim}_r"] = pearson(pred[:, j], human[:, j])
        spread = human[:, j].std()
        out[f"{dim[0]}_spread"] = float(pred[:, j].std() / spread) if spread > 0 else math.nan
    auc = quadrant_auc(catalogue.track_va, song_q[catalogue.songs])
    out["song_valence_auc"] = auc.get("valence_auc", math.nan)
    out["song_arousal_auc"] = auc.get("arousal_auc", math.nan)
    return out


def _share(hits: np.ndarray) -> float:
    return float(np.mean(hits)) if len(hits) else math.nan


def _ci(value: float, lo: float, hi: float) -> dict[str, float]:
    return {"value": float(value), "lo": float(lo), "hi": float(hi)}


# ----------------------------------------------------------------------------------- the run
@dataclass
class CheckpointRun:
    """One checkpoint's catalogue (closed once ranked), photo predictions and rankings."""

    label: str
    path: Path
    name: str
    sha256: str
    catalogue: Catalogue
    pred_va: np.ndarray  # [photos, 2]
    ok: np.ndarray  # [photos] bool: the service could decode the photo
    rankings: dict[str, list[list[int]]]  # method -> per photo, song positions best first
    seconds: float
    ablation: dict[str, list[list[int]]] = field(default_factory=dict)  # single-signal rankings, as above
    emotify: dict[str, Any] | None = None  # emotify_figures and what was not indexed


def run_checkpoint(
    path: Path,
    photos: Sequence[Photo],
    songs: Sequence[Song],
    directory: Path,
    settings: Settings,
    *,
    device: str = "auto",
    workers: int = 1,
    progress: bool | None = None,
    emotify: EmotifySet | None = None,
) -> CheckpointRun:
    """Index the songs with this checkpoint, then rank them for every photo by each of its methods.

    With ``emotify``, those songs are indexed too, into a sibling folder ``<directory>-emotify``.
    """
    from app.services.recommend import Ranker
    from model.inference import Matcher

    t0 = time.perf_counter()
    matcher = Matcher.load(path, device)
    label = f"{matcher.meta.name}@{matcher.checkpoint_hash[:8]}"
    catalogue = build_catalogue(matcher, songs, directory, settings, workers=workers, progress=progress)
    try:
        if not len(catalogue.songs):
            raise RetrievalEvalError(f"no test song could be indexed with {path}: {catalogue.failed[:3]}")
        embs, pred_va = embed_photos(matcher, photos, settings)
        ok = np.isfinite(embs).all(axis=1) & np.isfinite(pred_va).all(axis=1)
        cat = catalogue.songs
        cdcml: list[list[int]] = [[] for _ in photos]  # a photo the service refuses keeps []
        va_track: list[list[int]] = [[] for _ in photos]
        va_clip: list[list[int]] = [[] for _ in photos]
        ranker = Ranker(catalogue.live, matcher)
        for i in np.flatnonzero(ok):
            tracks = service_ranking(ranker, embs[i], settings)
            cdcml[i] = [catalogue.song_of_track[t] for t in tracks]
            va_track[i] = [int(cat[j]) for j in rank_by_va(pred_va[i], catalogue.track_va)]
            nearest = rank_by_clip_va(pred_va[i], catalogue.clip_va, catalogue.clip_song, len(cat))
            va_clip[i] = [int(cat[j]) for j in nearest]
        ablation = ablation_rankings(matcher, catalogue, embs, ok)
    finally:
        catalogue.close()
    emotify_result = None
    if emotify is not None:
        emotify_result = emotify_check(
            matcher,
            emotify,
            directory.with_name(f"{directory.name}-emotify"),
            settings,
            workers=workers,
            progress=progress,
        )
    return CheckpointRun(
        label=label,
        path=Path(path),
        name=matcher.meta.name,
        sha256=matcher.checkpoint_hash,
        catalogue=catalogue,
        pred_va=pred_va.astype(np.float64),
        ok=ok,
        rankings={f"cdcml:{label}": cdcml, f"va-track:{label}": va_track, f"va-clip:{label}": va_clip},
        seconds=time.perf_counter() - t0,
        ablation=ablation,
        emotify=emotify_result,
    )


def ablation_rankings(
    matcher: Matcher, catalogue: Catalogue, embs: np.ndarray, ok: np.ndarray
) -> dict[str, list[list[int]]]:
    """Rank every catalogue track by one signal alone, to see what each part of the shipped score adds.

    A track's clips are the ones the service scores (``Snapshot.track_clips`` with
    ``CLIPS_PER_TRACK`` evenly spread clips, their stored index vectors), over all tracks rather
    than the FAISS candidate pool. ``embedding_cosine``: mean cosine of photo and clip
    embeddings; ``learned_predictor``: mean ``Matcher.similarity_matrix`` score, clipped to
    [0, 1] as the service clips it, without the query-bank normalisation. Song positions per
    photo, best first; a photo the service refuses keeps [].
    """
    from app.services.bank_stats import CLIPS_PER_TRACK

    cat = catalogue.songs
    out: dict[str, list[list[int]]] = {name: [[] for _ in range(len(embs))] for name in ABLATION_SIGNALS}
    track_ids = [catalogue.track_of_song[int(s)] for s in cat]
    clips = catalogue.live.track_clips(track_ids, CLIPS_PER_TRACK)
    rows = np.flatnonzero(ok)
    if not clips or not len(rows):
        return out
    at = {t: j for j, t in enumerate(track_ids)}
    clip_embs = np.concatenate([c.embeddings for c in clips])
    clip_item = np.concatenate([np.full(len(c.clip_ids), at[c.track_id]) for c in clips])
    raw = np.asarray(matcher.similarity_matrix(embs[rows], clip_embs), np.float64)
    scores = {
        "embedding_cosine": cosine_scores(embs[rows], clip_embs),
        "learned_predictor": np.clip(np.nan_to_num(raw, nan=0.0), 0.0, 1.0),
    }
    for name, matrix in scores.items():
        for i, top in zip(rows, rank_by_track_score(matrix, clip_item, len(cat)), strict=True):
            out[name][i] = [int(cat[j]) for j in top]
    return out


def emotify_check(
    matcher: Matcher,
    data: EmotifySet,
    directory: Path,
    settings: Settings,
    *,
    workers: int = 1,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Index the Emotify songs as the catalogue is indexed; correlate each song's mean clip VA with its votes."""
    catalogue = build_catalogue(matcher, data.songs, directory, settings, workers=workers, progress=progress)
    catalogue.close()
    pred = song_mean_va(catalogue.clip_va, catalogue.clip_song, len(catalogue.songs))
    return {**emotify_figures(pred, data.targets[catalogue.songs]), "not_indexed": catalogue.failed}


def evaluate_retrieval(
    checkpoints: Sequence[Path],
    *,
    images: Sequence[str] = DEFAULT_IMAGES,
    music: Sequence[str] = DEFAULT_MUSIC,
    data_root: Path | None = None,
    split: str = "test",
    limit_images: int | None = None,
    limit_songs: int | None = None,
    seed: int = 0,
    n_boot: int = N_BOOT,
    workers: int = 1,
    device: str | None = None,
    workdir: Path | None = None,
    settings: Settings | None = None,
    progress: bool | None = None,
    emotify: Path | bool = False,
    emotify_max_songs: int = EMOTIFY_MAX_SONGS,
) -> dict[str, Any]:
    """Index, query and score each checkpoint end to end; returns a JSON-ready dict.

    Rankings in the result are song ids (``photos[i]`` gets ``methods[m]["top10"][i]``); each
    checkpoint's ``catalogue.track_of_song`` maps them to its track ids. The first checkpoint's
    catalogue and predicted photo VA also serve the random baseline. ``workdir`` keeps the
    catalogues (one empty sub-folder per checkpoint, and ``checkpoint-<i>-emotify`` for the
    Emotify check); by default a temporary folder is removed. ``emotify``: ``True`` checks
    ``<data_root>/emotify`` when that folder exists (the CLI's default), a path checks that
    folder, ``False`` (the default here, so callers do not pay for indexing it) skips. The
    Emotify check is reported, never part of any ranking figure.
    """
    from app.core.files import file_sha256
    from app.core.settings import Settings
    from model.meta import read_meta

    settings = settings or Settings()
    data_root = Path(data_root or settings.dataset_dir)
    if not checkpoints:
        raise RetrievalEvalError("give at least one checkpoint")
    if split not in ("train", "val", "test"):
        raise RetrievalEvalError(f"unknown split {split!r} (train, val or test)")
    for name, value in (("--limit-images", limit_images), ("--limit-songs", limit_songs)):
        if value is not None and value < 1:
            raise RetrievalEvalError(f"{name} must be at least 1")
    if n_boot < 1:
        raise RetrievalEvalError("--bootstrap must be at least 1")
    if emotify_max_songs < 1:
        raise RetrievalEvalError("--emotify-max-songs must be at least 1")
    paths = [Path(p) for p in checkpoints]
    for path in paths:
        if not path.is_file():
            raise RetrievalEvalError(f"checkpoint not found: {path}")
    hashes = [file_sha256(p) for p in paths]
    if len(set(hashes)) < len(hashes):
        raise RetrievalEvalError("the same checkpoint was given twice")
    configs = [read_meta(p).train_config for p in paths]
    specs = [split_spec(c) for c in configs]
    emotify_dir, emotify_skipped = resolve_emotify(emotify, data_root)
    started = time.perf_counter()
    data = load_eval_data(
        data_root, images, music, specs, split, limit_images=limit_images, limit_songs=limit_songs, seed=seed
    )
    photos, songs = data.photos, data.songs
    log.info("evaluating on %d photos and %d songs (%s split)", len(photos), len(songs), split)
    emotify_set: EmotifySet | None = None
    emotify_out: dict[str, Any] = {"skipped": emotify_skipped}
    if emotify_dir is not None:
        trained = [sp for sp, c in zip(specs, configs, strict=True) if trains_on(c, EMOTIFY, data_root)]
        emotify_set = load_emotify_set(emotify_dir, trained, split, emotify_max_songs, seed)
        emotify_out = {**emotify_set.info, "checkpoints": {}}
    _quiet_alembic()

    runs: list[CheckpointRun] = []
    with contextlib.ExitStack() as stack:
        root = Path(workdir) if workdir is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        for i, path in enumerate(paths):
            run = run_checkpoint(
                path,
                photos,
                songs,
                root / f"checkpoint-{i}",
                settings,
                device=device or settings.device,
                workers=workers,
                progress=progress,
                emotify=emotify_set,
            )
            runs.append(run)
            if emotify_set is not None and run.emotify is not None:
                emotify_out["checkpoints"][run.label] = run.emotify
    scored = score_runs(runs, specs, photos, songs, n_boot=n_boot, seed=seed)
    settings_out = {
        "split": split,
        "k": K,
        "search_k": settings.search_k,
        "bootstrap": n_boot,
        "seed": seed,
        "images": list(images),
        "music": list(music),
        "limit_images": limit_images,
        "limit_songs": limit_songs,
        "clip_hop_seconds": settings.clip_hop_seconds,
        "emotify_max_songs": emotify_max_songs,
    }
    result = {
        "settings": settings_out,
        **scored,
        "counts": {**data.counts, **scored["counts"]},
        "emotify": emotify_out,
    }
    log.info(
        "retrieval evaluation done in %.1f s (%s)",
        time.perf_counter() - started,
        ", ".join(f"{r.label} {r.seconds:.1f} s" for r in runs),
    )
    return _finite(result)


def score_runs(
    runs: Sequence[CheckpointRun],
    specs: Sequence[SplitSpec],
    photos: Sequence[Photo],
    songs: Sequence[Song],
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> dict[str, Any]:
    """Metrics of every method on the photos every checkpoint could decode, plus the random baseline.

    ``ablation`` (per checkpoint) puts the single-signal rankings beside the VA-distance baseline
    and the shipped path on the same photos and bootstrap resamples.
    """
    from app.services.bank_stats import CLIPS_PER_TRACK

    usable = np.logical_and.reduce([r.ok for r in runs])
    if not usable.any():
        raise RetrievalEvalError("no test photo could be decoded")
    keep = np.flatnonzero(usable)
    used = [photos[i] for i in keep]
    song_q = np.array([s.quadrant for s in songs], int)
    resamples = bootstrap_resamples(len(keep), n_boot, seed)
    first = runs[0]
    rows: list[tuple[str, list[list[int]], np.ndarray, np.ndarray, str | None]] = [
        (name, [ranks[i] for i in keep], r.pred_va[keep], r.catalogue.songs, r.label)
        for r in runs
        for name, ranks in r.rankings.items()
    ]
    rows.append(
        (
            RANDOM,
            random_rankings(len(keep), first.catalogue.songs, seed),
            first.pred_va[keep],
            first.catalogue.songs,
            None,
        )
    )
    photo_q = [p.quadrant for p in used]
    methods = {
        name: {
            "checkpoint": label,
            "metrics": method_metrics(top, used, pred, song_q, catalogue, resamples, seed),
            f"top{K}": [[songs[s].id for s in t] for t in top],
            "quadrant_mix": quadrant_mix(top, photo_q, song_q),
        }
        for name, top, pred, catalogue, label in rows
    }
    ablation: dict[str, Any] = {}
    for r in runs:
        table: dict[str, Any] = {"va_distance": {"method": f"va-track:{r.label}"}}
        for name in ABLATION_SIGNALS:
            top = [r.ablation[name][i] for i in keep] if name in r.ablation else [[] for _ in keep]
            table[name] = {
                "method": None,
                "metrics": method_metrics(top, used, r.pred_va[keep], song_q, r.catalogue.songs, resamples, seed),
                "quadrant_mix": quadrant_mix(top, photo_q, song_q),
                f"top{K}": [[songs[s].id for s in t] for t in top],
            }
        table["shipped"] = {"method": f"cdcml:{r.label}"}
        for row in ("va_distance", "shipped"):
            m = methods[table[row]["method"]]
            table[row] |= {"metrics": m["metrics"], "quadrant_mix": m["quadrant_mix"]}
        ablation[r.label] = {"clips_per_track": CLIPS_PER_TRACK, "over": "all catalogue tracks", "rows": table}
    checkpoints = {
        r.label: {
            "path": str(r.path),
            "name": r.name,
            "sha256": r.sha256,
            "split": {"seed": s.seed, "fractions": list(s.fractions)},
            "catalogue": {
                "tracks": len(r.catalogue.songs),
                "clips": len(r.catalogue.clip_va),
                "index": r.catalogue.index,
                "not_indexed": r.catalogue.failed,
                "track_of_song": {songs[i].id: t for i, t in sorted(r.catalogue.track_of_song.items())},
            },
            "modality": modality_figures(used, r.pred_va[keep], song_q, r.catalogue),
            "photo_va_pred": np.round(r.pred_va[keep], 6).tolist(),
        }
        for r, s in zip(runs, specs, strict=True)
    }

    def mix(qs: Sequence[int]) -> dict[str, int]:
        return {f"Q{q}": int(np.sum(np.asarray(qs) == q)) for q in QUADRANTS}

    counts = {
        "photos": len(used),
        "photos_not_decoded": int((~usable).sum()),
        "photo_sources": {s: sum(p.source == s for p in used) for s in sorted({p.source for p in used})},
        "photo_quadrants": mix([p.quadrant for p in used]),
        "songs": len(songs),
        "song_quadrants": mix(song_q),
        "clips": {label: c["catalogue"]["clips"] for label, c in checkpoints.items()},
    }
    return {
        "counts": counts,
        "photos": [
            {
                "id": p.id,
                "path": str(p.path),
                "source": p.source,
                "valence": p.valence,
                "arousal": p.arousal,
                "quadrant": p.quadrant,
            }
            for p in used
        ],
        "songs": [{"id": s.id, "path": str(s.path), "source": s.source, "quadrant": s.quadrant} for s in songs],
        "checkpoints": checkpoints,
        "methods": methods,
        "ablation": ablation,
    }


def _quiet_alembic() -> None:
    """Migrating each temporary catalogue would log Alembic's plugin lines (as the service avoids)."""
    alembic_log = logging.getLogger("alembic")
    if not alembic_log.isEnabledFor(logging.DEBUG):
        alembic_log.setLevel(logging.WARNING)


def _finite(obj: Any) -> Any:
    """NaN/inf become null so the JSON is valid everywhere."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return _finite(float(obj))
    return obj


# ------------------------------------------------------------------------------------- report
def _cell(m: dict[str, float | None] | None, count: bool = False) -> str:
    """``value [lo, hi]``; counts (``distinct_first``) as numbers of songs, shares to 3 decimals."""
    if not m or m.get("value") is None:
        return "n/a"

    def f(x: float | None) -> str:
        if x is None:
            return "nan"
        return f"{x:.4g}" if count else f"{x:.3f}"

    return f"{f(m['value'])} [{f(m['lo'])}, {f(m['hi'])}]"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def _markdown(rows: list[list[str]]) -> list[str]:
    """A markdown table (first row the header), columns padded so it also reads as plain text."""
    widths = [max(3, *(len(r[c]) for r in rows)) for c in range(len(rows[0]))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)) + " |"

    return [line(rows[0]), line(["-" * w for w in widths]), *(line(r) for r in rows[1:])]


def _share_cell(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _mix_lines(methods: dict[str, Any]) -> list[str]:
    """Full photo-quadrant x music-quadrant tables for the CDCML paths, diagonals for the baselines."""
    lines: list[str] = []
    for name, m in methods.items():
        mix = m.get("quadrant_mix")
        if not name.startswith("cdcml:") or not mix:
            continue
        rows = [["photo quadrant", "n", *(f"Q{q}" for q in QUADRANTS)]]
        rows += [[f"{pq} photos", str(r["n"]), *(_share_cell(r[f"Q{q}"]) for q in QUADRANTS)] for pq, r in mix.items()]
        q2 = mix["Q2"]["Q2"]
        verdict = "n/a" if q2 is None else ("met" if q2 >= Q2_TARGET else "not met")
        lines += [
            "",
            f"{name}: share of each music quadrant among a photo's top {K}",
            *_markdown(rows),
            f"target Q2 photos' Q2 share >= {Q2_TARGET}: {_share_cell(q2)} ({verdict})",
        ]
    rows = [["method (own-quadrant share)", *(f"Q{q}->Q{q} (n)" for q in QUADRANTS)]]
    for name, m in methods.items():
        mix = m.get("quadrant_mix")
        if mix:
            rows.append([name, *(f"{_share_cell(mix[f'Q{q}'][f'Q{q}'])} ({mix[f'Q{q}']['n']})" for q in QUADRANTS)])
    return [*lines, "", *_markdown(rows)] if len(rows) > 1 else lines


ABLATION_LABELS = {
    "va_distance": "VA distance",
    "embedding_cosine": "embedding cosine",
    "learned_predictor": "learned predictor",
    "shipped": "shipped",
}


def _ablation_lines(ablation: dict[str, Any]) -> list[str]:
    """One markdown table per checkpoint: each single signal beside the shipped combination."""
    cols = (f"quadrant@{K}", f"valence_side@{K}", f"arousal_side@{K}", "distinct_first", "top_first_share")
    lines: list[str] = []
    for label, ab in ablation.items():
        rows = [["ranking", *cols, "Q2->Q2"]]
        for key, row in ab["rows"].items():
            q2 = (row.get("quadrant_mix") or {}).get("Q2", {}).get("Q2")
            cells = [_cell(row["metrics"].get(c), count=c == "distinct_first") for c in cols]
            rows.append([ABLATION_LABELS.get(key, key), *cells, _share_cell(q2)])
        lines += [
            "",
            f"ablation {label} (all tracks, up to {ab['clips_per_track']} clips each; shipped: the service path)",
            *_markdown(rows),
        ]
    return lines


def _emotify_lines(emotify: dict[str, Any] | None) -> list[str]:
    """The Emotify check: correlations of predicted song VA with raw vote sums (reported only)."""
    if not emotify:
        return []
    if "skipped" in emotify:
        return ["", f"Emotify check skipped: {emotify['skipped']}"]
    lines = [
        "",
        f"Emotify check (reported, not selected on): {emotify['sampled']} of {emotify['eligible']} songs "
        f"({emotify['held_out_by']}); arousal ~ {emotify['targets']['arousal']}, "
        f"valence ~ {emotify['targets']['valence']}",
    ]
    rows = [["checkpoint", "n", "valence pearson", "valence spearman", "arousal pearson", "arousal spearman"]]
    for label, e in emotify.get("checkpoints", {}).items():
        cells = [_share_cell(e[d][c]) for d in ("valence", "arousal") for c in ("pearson", "spearman")]
        rows.append([label, str(e["n"]), *cells])
    return [*lines, *_markdown(rows)]


def format_report(result: dict[str, Any]) -> str:
    """The printed summary: counts, three metric tables (methods as rows), per-checkpoint VA figures,
    the per-quadrant mix, the ablation and the Emotify check."""
    c = result["counts"]
    s = result["settings"]

    def mix(d: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in d.items())

    lines = [
        f"photoscore evaluate-retrieval: {s['split']} split, top {s['k']}, bootstrap {s['bootstrap']} (95 % intervals)",
        f"  photos {c['photos']} ({', '.join(f'{k} {v}' for k, v in c['photo_sources'].items())}; "
        f"{mix(c['photo_quadrants'])})"
        + (f", {c['photos_not_decoded']} not decoded" if c["photos_not_decoded"] else ""),
        f"  songs  {c['songs']} ({mix(c['song_quadrants'])})",
        "  clips  " + ", ".join(f"{label} {n}" for label, n in c["clips"].items()),
    ]
    for group in (MATCH_METRICS, CORR_METRICS, HUB_METRICS):
        rows = [["method", *group]]
        rows += [
            [name, *(_cell(m["metrics"].get(g), count=g == "distinct_first") for g in group)]
            for name, m in result["methods"].items()
        ]
        lines += ["", *_table(rows)]
    fig = ("image_valence_r", "image_arousal_r", "v_spread", "a_spread", "song_valence_auc", "song_arousal_auc")
    rows = [["checkpoint", *fig]]
    for label, ck in result["checkpoints"].items():
        rows.append([label, *("n/a" if ck["modality"][f] is None else f"{ck['modality'][f]:.3f}" for f in fig)])
    lines += ["", *_table(rows)]
    lines += _mix_lines(result["methods"])
    lines += _ablation_lines(result.get("ablation") or {})
    lines += _emotify_lines(result.get("emotify"))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- CLI
def add_retrieval_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``evaluate-retrieval`` on the ``photoscore`` sub-command parser."""
    p = subparsers.add_parser(
        "evaluate-retrieval",
        help="end-to-end model selection: index held-out songs, query held-out photos through the service",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", type=Path, help="default: PHOTOSCORE_CHECKPOINT (the shipped model)")
    p.add_argument(
        "--compare", type=Path, action="append", default=[], metavar="CKPT", help="another checkpoint (repeatable)"
    )
    p.add_argument("--images", default=",".join(DEFAULT_IMAGES), help="image sources, comma-separated")
    p.add_argument("--music", default=",".join(DEFAULT_MUSIC), help="music sources (audio items only), comma-separated")
    p.add_argument("--data-root", type=Path, help="where bare source names live (default: PHOTOSCORE_DATASET_DIR)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--limit-images", type=int, metavar="N", help="seeded, quadrant-stratified subsample of photos")
    p.add_argument("--limit-songs", type=int, metavar="N", help="seeded, quadrant-stratified subsample of songs")
    p.add_argument("--seed", type=int, default=0, help="subsample, random baseline and bootstrap seed")
    p.add_argument("--bootstrap", type=int, default=N_BOOT, metavar="N", help="bootstrap resamples over photos")
    p.add_argument("--workers", type=int, default=1, help="indexer decoding processes (0: in this process)")
    p.add_argument("--device", help="'auto', 'cpu' or 'cuda[:N]' (default: PHOTOSCORE_DEVICE)")
    p.add_argument("--workdir", type=Path, help="keep the catalogues here (must be empty); default: a temp folder")
    p.add_argument("--json", type=Path, metavar="OUT", help="write everything, per-photo top 10s included")
    emotify = p.add_mutually_exclusive_group()
    emotify.add_argument(
        "--emotify", type=Path, metavar="DIR", help="Emotify folder to check (default: <data-root>/emotify if present)"
    )
    emotify.add_argument("--no-emotify", action="store_true", help="skip the Emotify check")
    p.add_argument(
        "--emotify-max-songs",
        type=int,
        default=EMOTIFY_MAX_SONGS,
        metavar="N",
        help="seeded, genre-stratified sample of the held-out Emotify songs",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=run_retrieval_eval)
    return p


def run_retrieval_eval(args: argparse.Namespace) -> int:
    """The ``evaluate-retrieval`` handler: 0 on success, 2 with a one-line reason on bad input."""
    from pydantic import ValidationError

    from app.core.settings import Settings
    from model.meta import CheckpointError

    try:
        settings = Settings()
        if args.workers < 0:
            raise RetrievalEvalError("--workers must be 0 or more")
        started = time.perf_counter()
        result = evaluate_retrieval(
            [args.checkpoint or settings.checkpoint, *args.compare],
            images=_names(args.images),
            music=_names(args.music),
            data_root=args.data_root,
            split=args.split,
            limit_images=args.limit_images,
            limit_songs=args.limit_songs,
            seed=args.seed,
            n_boot=args.bootstrap,
            workers=args.workers,
            device=args.device,
            workdir=args.workdir,
            settings=settings,
            progress=False if args.quiet else None,
            emotify=False if args.no_emotify else (args.emotify if args.emotify is not None else True),
            emotify_max_songs=args.emotify_max_songs,
        )
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=1) + "\n")
    except (RetrievalEvalError, CheckpointError, OSError, ValueError, ValidationError) as exc:
        print(f"photoscore evaluate-retrieval: error: {first_line(exc)}", file=sys.stderr)
        return 2
    print(format_report(result))
    print(f"\nwall time {time.perf_counter() - started:.1f} s" + (f"; JSON: {args.json}" if args.json else ""))
    return 0


def _names(text: str) -> list[str]:
    return [n.strip() for n in str(text).split(",") if n.strip()]
