"""Recall: how approximate search is measured against exact search and tuned until it reaches a
target, and how an IVF-PQ index is laid out for a catalogue's size.

``efSearch`` (HNSW) and ``nprobe`` (IVF-PQ) are the smallest values whose recall@10 on a sample
of stored vectors used as queries reaches the target; IVF-PQ is measured as the service searches
(``search_k`` candidates). Apart from the index types so that each type stays a plain search
structure and the measurement is written once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from app.core.vector_index.arrays import as_vectors
from app.core.vector_index.hnsw import DEFAULT_EF_SEARCH
from app.core.vector_index.meta import DEFAULT_SEARCH_K

if TYPE_CHECKING:
    from app.core.vector_index.index import ClipIndex

EF_SEARCH_CANDIDATES = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
NPROBE_CANDIDATES = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
IVF_TRAIN_PER_LIST = 64  # training sample per inverted list
IVF_MIN_TRAIN = 65_536
KNOBS = {"hnsw": "efSearch", "ivfpq": "nprobe"}  # the search parameter tuning sets, by index type


# ------------------------------------------------------------------------------ IVF-PQ layout
@dataclass(frozen=True)
class IvfPqLayout:
    """Inverted lists, sub-quantisers and training-sample size for one build."""

    nlist: int
    m: int
    train_n: int


def default_nlist(n: int) -> int:
    """About sqrt(n) inverted lists, a power of two (~2,400 clips per list at 10^7)."""
    return int(min(65_536, max(16, 2 ** round(np.log2(max(np.sqrt(max(n, 1)), 1.0))))))


def default_pq_m(dim: int) -> int:
    """Sub-quantisers: 8 dimensions each (one byte per 8 floats), at most 64, dividing ``dim``.

    With exact re-scoring of 4 x K candidates, recall is set by ``nprobe``, not by code size: on
    synthetic catalogues 8 and 4 dimensions per byte gave the same recall@10.
    """
    for m in range(min(64, max(dim // 8, 1)), 0, -1):
        if dim % m == 0:
            return m
    return 1


def choose_ivfpq_layout(n: int, dim: int, nlist: int | None, pq_m: int | None) -> IvfPqLayout:
    """The given ``nlist``/``pq_m`` or the defaults; ValueError when they cannot be trained."""
    nlist = int(nlist or default_nlist(n))
    m = int(pq_m or default_pq_m(dim))
    if dim % m:
        raise ValueError(f"pq_m={m} must divide the dimension {dim}")
    train_n = min(n, max(IVF_MIN_TRAIN, IVF_TRAIN_PER_LIST * nlist))
    if train_n < max(nlist, 256):
        raise ValueError(f"IVF-PQ needs at least {max(nlist, 256)} vectors to train, got {n}")
    return IvfPqLayout(nlist, m, train_n)


# ----------------------------------------------------------------------------------- measuring
def recall(found: np.ndarray, exact: np.ndarray, query_ids: np.ndarray, k: int) -> float:
    """Mean |approx top-k ∩ exact top-k| / |exact top-k|, each query's own id removed first."""
    hits, total = 0, 0
    for row_found, row_exact, own in zip(found, exact, query_ids, strict=True):
        truth = [i for i in row_exact.tolist() if i >= 0 and i != own][:k]
        got = [i for i in row_found.tolist() if i >= 0 and i != own][:k]
        hits += len(set(truth) & set(got))
        total += len(truth)
    return hits / total if total else 1.0


def sample_queries(
    pool: tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]], dim: int, sample: int, seed: int, jitter: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """``sample`` stored vectors drawn from ``pool`` (ids, rows by position) and their ids."""
    ids, rows = pool
    if not len(ids) or sample <= 0:
        return np.empty(0, np.int64), np.empty((0, dim), np.float32)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(ids), size=min(sample, len(ids)), replace=False))
    queries = rows(pick)
    if jitter:
        # Real queries (photos) are near clips, not on them; a stored vector is a node of the
        # HNSW graph and finds its neighbours too easily. Nudge each to cosine ~0.8.
        noise = rng.standard_normal(queries.shape).astype(np.float32)
        noise *= 0.75 / np.linalg.norm(noise, axis=1, keepdims=True)
        queries = queries + noise
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return ids[pick], np.ascontiguousarray(queries, np.float32)


def recall_at_k(index: ClipIndex, sample: int | np.ndarray = 200, k: int = 10, seed: int = 0) -> float:
    """Mean overlap of ``index``'s top-``k`` with exact search's (1.0 for flat).

    ``sample`` is a number of stored vectors drawn as queries, nudged off the stored point and
    with their own id left out of both lists (finding itself would flatter the index), or
    explicit query vectors.
    """
    if isinstance(sample, np.ndarray):
        queries = as_vectors(np.atleast_2d(sample), index.dim)
        query_ids = np.full(len(queries), -1, np.int64)
    else:
        query_ids, queries = sample_queries(index.query_pool(), index.dim, int(sample), seed)
    if not len(queries):
        return 1.0
    if index.index_type == "ivfpq":  # measured as the service searches (K candidates)
        wide = max(k + 1, int(index.meta.params.get("search_k", DEFAULT_SEARCH_K)))
        found = index.search(queries, wide)[1][:, : k + 1]
    else:
        found = index.search(queries, k + 1)[1]
    return recall(found, index.exact_ids(queries, k + 1), query_ids, k)


# -------------------------------------------------------------------------------------- tuning
def tune_ef_search(index: ClipIndex, target_recall: float = 0.95, *, sample: int = 200, seed: int = 0) -> int:
    """Pick the smallest ``efSearch`` reaching ``target_recall`` at k=10; records it."""
    if index.index_type != "hnsw":
        raise ValueError("only HNSW has efSearch")
    params = index.meta.params
    query_ids, queries = sample_queries(index.query_pool(), index.dim, sample, seed)
    params["target_recall"] = target_recall
    if not len(queries):  # nothing to measure on yet
        params["efSearch"] = DEFAULT_EF_SEARCH
        index.meta.recall_at_10 = None
        return DEFAULT_EF_SEARCH
    exact = index.exact_ids(queries, 11)
    chosen, reached = EF_SEARCH_CANDIDATES[-1], 0.0
    for ef in EF_SEARCH_CANDIDATES:
        params["efSearch"] = ef
        reached = recall(index.search(queries, 11)[1], exact, query_ids, 10)
        if reached >= target_recall:
            chosen = ef
            break
    params["efSearch"] = chosen
    index.meta.recall_at_10 = reached
    return chosen


def tune_nprobe(index: ClipIndex, target_recall: float = 0.95, *, sample: int = 200, seed: int = 0) -> int:
    """Pick ``nprobe``: twice the smallest value whose recall@10 at the service's K reaches the target.

    The sample mixes stored vectors nudged off their point with normalised sums of eight
    random stored vectors (a direction the catalogue spans but no clip sits on, like a photo
    that suits no song in particular); the factor two is headroom for queries farther from
    the catalogue still.
    """
    if index.index_type != "ivfpq":
        raise ValueError("only IVF-PQ has nprobe")
    params = index.meta.params
    pool = index.query_pool()
    query_ids, queries = sample_queries(pool, index.dim, sample, seed)
    params["target_recall"] = target_recall
    nlist = int(params["nlist"])
    if not len(queries):
        params["nprobe"] = min(16, nlist)
        index.meta.recall_at_10 = None
        return int(params["nprobe"])
    rng = np.random.default_rng(seed + 1)
    live = pool[0]
    parts = index.reconstruct(live[rng.integers(0, len(live), size=len(queries) * 8)])
    mixed = parts.reshape(len(queries), 8, index.dim).sum(axis=1)
    mixed /= np.maximum(np.linalg.norm(mixed, axis=1, keepdims=True), 1e-12)
    queries = np.ascontiguousarray(np.concatenate([queries, mixed]), np.float32)
    query_ids = np.concatenate([query_ids, np.full(len(mixed), -1, np.int64)])
    exact = index.exact_ids(queries, 11)
    k = max(11, int(params.get("search_k", DEFAULT_SEARCH_K)))
    candidates = [c for c in NPROBE_CANDIDATES if c < nlist] + [nlist]
    chosen = candidates[-1]
    for nprobe in candidates:
        params["nprobe"] = nprobe
        if recall(index.search(queries, k)[1][:, :11], exact, query_ids, 10) >= target_recall:
            chosen = nprobe
            break
    params["nprobe"] = min(2 * chosen, nlist)
    index.meta.recall_at_10 = recall(index.search(queries, k)[1][:, :11], exact, query_ids, 10)
    return int(params["nprobe"])


def tune_or_measure(index: ClipIndex, value: int | None, *, target_recall: float, sample: int, seed: int) -> None:
    """After a build: tune the type's search parameter when ``value`` is None, else fix it to
    ``value`` and record the recall it gives. Exact search has nothing to tune."""
    knob = KNOBS.get(index.index_type)
    if knob is None:
        return
    if value is None:
        tune = tune_ef_search if knob == "efSearch" else tune_nprobe
        tune(index, target_recall, sample=sample, seed=seed)
    else:
        index.meta.params[knob] = int(value)
        index.meta.recall_at_10 = recall_at_k(index, sample, k=10, seed=seed)
