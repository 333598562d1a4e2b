"""One evaluation run end to end: per checkpoint index, query and rank; then score every method.

``evaluate_retrieval`` checks its input, loads the held-out photos and songs (``split``), and for
each checkpoint builds a catalogue (``catalogue``), embeds the photos and ranks the songs through
the service (``service``) and by the baselines and the ablation (``baselines``); ``score_runs``
computes every metric with paired bootstrap intervals (``metrics``, ``bootstrap``) on the photos
every checkpoint could decode. The result is a JSON-ready dict (``report`` prints it).
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from app.evaluation.baselines import (
    ABLATION_SIGNALS,
    RANDOM,
    ablation_rankings,
    random_rankings,
    rank_by_clip_va,
    rank_by_va,
)
from app.evaluation.bootstrap import N_BOOT, bootstrap_resamples
from app.evaluation.catalogue import Catalogue, build_catalogue, quiet_alembic
from app.evaluation.emotify import (
    EMOTIFY,
    EMOTIFY_MAX_SONGS,
    EmotifySet,
    emotify_check,
    load_emotify_set,
    resolve_emotify,
    trains_on,
)
from app.evaluation.errors import RetrievalEvalError
from app.evaluation.metrics import QUADRANTS, K, method_metrics, modality_figures, quadrant_mix
from app.evaluation.service import embed_photos, service_ranker, service_ranking
from app.evaluation.split import DEFAULT_IMAGES, DEFAULT_MUSIC, Photo, Song, SplitSpec, load_eval_data, split_spec

if TYPE_CHECKING:
    from app.core.settings import Settings

log = logging.getLogger(__name__)


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
        bank_only: list[list[int]] = [[] for _ in photos]  # the service's ranking without the VA term
        ranker = service_ranker(catalogue.live, matcher, settings)
        plain = service_ranker(catalogue.live, matcher, settings, va_weight=0.0)
        for i in np.flatnonzero(ok):
            tracks = service_ranking(ranker, embs[i], pred_va[i])
            cdcml[i] = [catalogue.song_of_track[t] for t in tracks]
            bank_only[i] = [catalogue.song_of_track[t] for t in service_ranking(plain, embs[i], pred_va[i])]
            va_track[i] = [int(cat[j]) for j in rank_by_va(pred_va[i], catalogue.track_va)]
            nearest = rank_by_clip_va(pred_va[i], catalogue.clip_va, catalogue.clip_song, len(cat))
            va_clip[i] = [int(cat[j]) for j in nearest]
        ablation = ablation_rankings(matcher, catalogue, embs, ok) | {"bank_normalised": bank_only}
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
    quiet_alembic()

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
    used = [photos[int(i)] for i in keep]
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

    def mix(qs: Sequence[int] | np.ndarray) -> dict[str, int]:
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
