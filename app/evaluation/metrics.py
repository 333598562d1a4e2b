"""The ranking metrics: pure functions, rankings in, numbers out.

A ranking is a list of song positions per photo, best first; ``k`` cuts it to the top k.
Matching (does a photo get songs of its quadrant, its side of each VA axis), correlation (does the
share of high-valence songs follow the photo's rating), hubness (does one song take the first
place for every photo) and the checkpoint's VA quality; ``method_metrics`` gives every figure of
one method with its paired bootstrap interval (``app.evaluation.bootstrap``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from app.evaluation.bootstrap import bootstrap_ci, bootstrap_resamples, mean_ci

if TYPE_CHECKING:
    from app.evaluation.catalogue import Catalogue
    from app.evaluation.split import Photo

K = 10
QUADRANTS = (1, 2, 3, 4)
MAX_JACCARD_PHOTOS = 3000  # the pairwise Jaccard matrix is n x n; above this a seeded photo sample is used
MATCH_METRICS = (f"quadrant@{K}", f"quadrant_chance@{K}", f"valence_side@{K}", f"arousal_side@{K}")
CORR_METRICS = ("spearman_valence", "spearman_arousal", "spearman_valence_pred", "spearman_arousal_pred")
HUB_METRICS = ("distinct_first", "top_first_share", f"coverage@{K}", f"jaccard@{K}")
METRICS = MATCH_METRICS + CORR_METRICS + HUB_METRICS

Ints = Sequence[int] | np.ndarray
Bools = Sequence[bool] | np.ndarray
Floats = Sequence[float] | np.ndarray


def quadrant_at_k(top: Sequence[Sequence[int]], photo_q: Ints, song_q: Ints, k: int = K) -> np.ndarray:
    """Per photo: share of its top-k songs whose quadrant is the photo's."""
    sq = np.asarray(song_q)
    return np.array([_share(sq[list(t[:k])] == q) for t, q in zip(top, photo_q, strict=True)], float)


def quadrant_chance(photo_q: Ints, catalogue_q: Ints) -> np.ndarray:
    """Per photo: expected ``quadrant_at_k`` of a random top-k, i.e. its quadrant's share of the catalogue."""
    cq = np.asarray(catalogue_q)
    share = {q: float(np.mean(cq == q)) if len(cq) else math.nan for q in QUADRANTS}
    return np.array([share.get(int(q), 0.0) for q in photo_q], float)


def quadrant_mix(top: Sequence[Sequence[int]], photo_q: Ints, song_q: Ints, k: int = K) -> dict[str, dict[str, float]]:
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


def side_at_k(top: Sequence[Sequence[int]], photo_high: Bools, song_high: Bools, k: int = K) -> np.ndarray:
    """Per photo: share of its top-k songs on the photo's side (high/low) of one VA axis."""
    high = np.asarray(song_high, bool)
    return np.array([_share(high[list(t[:k])] == bool(h)) for t, h in zip(top, photo_high, strict=True)], float)


def high_share_at_k(top: Sequence[Sequence[int]], song_high: Bools, k: int = K) -> np.ndarray:
    """Per photo: share of its top-k songs on the high side of one VA axis."""
    high = np.asarray(song_high, bool)
    return np.array([_share(high[list(t[:k])]) for t in top], float)


def spearman(x: Floats, y: Floats) -> float:
    """Spearman's rho (average ranks for ties); NaN when either side is constant or too short."""
    from scipy.stats import rankdata

    a, b = np.asarray(x, float), np.asarray(y, float)
    if len(a) < 3:
        return math.nan
    rx, ry = rankdata(a), rankdata(b)
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def pearson_r(x: Floats, y: Floats) -> float:
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


def method_metrics(
    top: Sequence[Sequence[int]],
    photos: Sequence[Photo],
    photo_pred_va: np.ndarray,
    song_q: np.ndarray,
    catalogue: Ints,
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
        out[name] = _ci(float(values.mean()), *mean_ci(values, resamples))
    shares = {"valence": high_share_at_k(top, high_v_song, k), "arousal": high_share_at_k(top, high_a_song, k)}
    for j, dim in enumerate(("valence", "arousal")):
        for suffix, truth in (("", human[:, j]), ("_pred", np.asarray(photo_pred_va, float)[:, j])):
            share = shares[dim]
            out[f"spearman_{dim}{suffix}"] = _ci(
                spearman(truth, share), *bootstrap_ci(functools.partial(_resampled_spearman, truth, share), resamples)
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
    jac = jaccard_matrix([top[int(i)] for i in jac_rows], len(song_q), k)
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


def _resampled_spearman(x: np.ndarray, y: np.ndarray, sample: np.ndarray) -> float:
    return spearman(x[sample], y[sample])


def _share(hits: np.ndarray) -> float:
    return float(np.mean(hits)) if len(hits) else math.nan


def _ci(value: float, lo: float, hi: float) -> dict[str, float]:
    return {"value": float(value), "lo": float(lo), "hi": float(hi)}
