"""The rankings the shipped path is compared with: by predicted VA, at random, and by one signal alone.

``va-track`` and ``va-clip`` rank the catalogue by the distance of the photo's predicted VA to
each track's mean clip VA, or to its nearest clip; ``random`` is the floor every method must
clear. The ablation ranks every catalogue track by one signal of the shipped score alone
(embedding cosine, the learned predictor without query-bank normalisation; the service's ranking
without its VA-distance term comes from ``run``). Rankings are song (or item) positions, best first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from app.evaluation.metrics import Ints, K

if TYPE_CHECKING:
    from app.evaluation.catalogue import Catalogue
    from model.inference import Matcher

RANDOM = "random"
#: The signals ``ablation_rankings`` ranks by, one alone each.
SINGLE_SIGNALS = ("embedding_cosine", "learned_predictor")
#: The ablation's rows between VA distance (the va-track baseline) and the shipped path: the single
#: signals, then the service's bank-normalised ranking without the VA-distance term.
ABLATION_SIGNALS = (*SINGLE_SIGNALS, "bank_normalised")


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


def random_rankings(n_photos: int, items: Ints, seed: int, k: int = K) -> list[list[int]]:
    """A seeded random top-k of ``items`` per photo: the floor every method must clear."""
    rng = np.random.default_rng([seed, 7])
    pool = np.asarray(items, int)
    return [[int(x) for x in pool[rng.permutation(len(pool))[:k]]] for _ in range(n_photos)]


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
    from app.services.ranking import SCORE_DECIMALS

    clip_item = np.asarray(clip_item, int)
    counts = np.bincount(clip_item, minlength=n_items).astype(np.float64)
    member = np.zeros((len(clip_item), n_items))
    member[np.arange(len(clip_item)), clip_item] = 1.0
    sums = np.asarray(scores, np.float64).reshape(-1, len(clip_item)) @ member
    means = np.round(np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0), SCORE_DECIMALS)
    held = np.flatnonzero(counts > 0)
    return [[int(held[j]) for j in np.argsort(-row[held], kind="stable")[:k]] for row in means]


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
    out: dict[str, list[list[int]]] = {name: [[] for _ in range(len(embs))] for name in SINGLE_SIGNALS}
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
