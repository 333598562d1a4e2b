"""The Emotify check: does a checkpoint's predicted song VA follow listeners' votes on unseen songs?

Reported beside the ranking figures, never selected on. Each unseen Emotify song (a seeded
genre-stratified sample) is indexed as the catalogue is, and its mean predicted clip VA is
correlated with sums of its raw GEMS vote shares (Emotify has no VA ratings).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from app.evaluation.catalogue import build_catalogue
from app.evaluation.errors import RetrievalEvalError
from app.evaluation.metrics import pearson_r, spearman
from app.evaluation.split import Song, SplitSpec, held_out_mask, resolve_sources, stratified_sample

if TYPE_CHECKING:
    from app.core.settings import Settings
    from model.inference import Matcher

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
