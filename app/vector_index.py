"""FAISS index over clip embeddings; ids are catalogue clip ids, never row positions.

Vectors are L2-normalised, so inner product ranks like cosine similarity. Small catalogues use
exact search (``IndexFlatIP``); large ones HNSW with ``efSearch`` tuned on a sample until recall@10
against exact search reaches a target. HNSW cannot delete, so removed ids become tombstones that
searches exclude with an ``IDSelector`` (rebuild when they pile up).

On disk, a directory holds ``clips-<token>.faiss`` plus ``index.json`` naming it; the JSON is
replaced last (temp file, fsync, ``os.replace``), so readers always see a matching pair.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np

SIDECAR = "index.json"
FORMAT_VERSION = 1
EF_SEARCH_CANDIDATES = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)


class IndexLoadError(ValueError):
    """The index directory cannot be used; the message says why and what to run."""


class IndexNotFoundError(IndexLoadError, FileNotFoundError):
    """No index has been written to the directory yet."""


class IndexMismatchError(IndexLoadError):
    """The index was built from another checkpoint's embeddings (or another dimension)."""


@dataclass
class IndexMeta:
    """What the sidecar records about an index."""

    checkpoint_hash: str
    dim: int
    count: int
    index_type: str  # "flat" (exact) or "hnsw"
    params: dict[str, Any] = field(default_factory=dict)
    last_event_id: int = 0
    built_at: str = ""
    recall_at_10: float | None = None  # None for exact search (recall is 1 by construction)
    file: str = ""
    removed_ids: list[int] = field(default_factory=list)
    format_version: int = FORMAT_VERSION


class ClipIndex:
    """A thread-safe FAISS ``IndexIDMap2`` of clip embeddings with its metadata."""

    def __init__(self, index: faiss.Index, meta: IndexMeta) -> None:
        self._index = index
        self.meta = meta
        self._removed: set[int] = {int(i) for i in meta.removed_ids}
        self._lock = threading.Lock()

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def build(
        cls,
        ids: np.ndarray,
        embeddings: np.ndarray,
        *,
        checkpoint_hash: str,
        exact_threshold: int = 200_000,
        dim: int | None = None,
        index_type: str = "auto",
        hnsw_m: int = 32,
        ef_construction: int = 80,
        ef_search: int | None = None,
        target_recall: float = 0.95,
        recall_sample: int = 200,
        last_event_id: int = 0,
        seed: int = 0,
    ) -> ClipIndex:
        """Index ``embeddings`` under ``ids``: exact below ``exact_threshold`` vectors, else HNSW.

        ``ef_search=None`` tunes it: the smallest candidate whose recall@10 on ``recall_sample``
        stored vectors used as queries reaches ``target_recall``.
        """
        ids = _as_ids(ids)
        embeddings = _as_vectors(embeddings, dim)
        d = int(embeddings.shape[1]) if embeddings.shape[1] else int(dim or 0)
        if d <= 0:
            raise ValueError("cannot infer the dimension of an empty index; pass dim=")
        if len(ids) != len(embeddings):
            raise ValueError(f"{len(ids)} ids for {len(embeddings)} embeddings")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("duplicate clip ids")
        kind = index_type
        if kind == "auto":
            kind = "flat" if len(ids) < exact_threshold else "hnsw"
        params: dict[str, Any] = {"exact_threshold": int(exact_threshold)}
        if kind == "flat":
            inner: faiss.Index = faiss.IndexFlatIP(d)
        elif kind == "hnsw":
            inner = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = ef_construction
            params.update(M=hnsw_m, efConstruction=ef_construction)
        else:
            raise ValueError(f"unknown index type {index_type!r} (auto, flat or hnsw)")
        index = faiss.IndexIDMap2(inner)
        if len(ids):
            index.add_with_ids(embeddings, ids)
        meta = IndexMeta(
            checkpoint_hash=checkpoint_hash,
            dim=d,
            count=len(ids),
            index_type=kind,
            params=params,
            last_event_id=int(last_event_id),
            built_at=_now(),
        )
        built = cls(index, meta)
        if kind == "hnsw":
            if ef_search is None:
                built.tune_ef_search(target_recall, sample=recall_sample, seed=seed)
            else:
                params["efSearch"] = int(ef_search)
                built.meta.recall_at_10 = built.recall_at_k(recall_sample, k=10, seed=seed)
        return built

    def tune_ef_search(self, target_recall: float = 0.95, *, sample: int = 200, seed: int = 0) -> int:
        """Pick the smallest ``efSearch`` reaching ``target_recall`` at k=10; records it."""
        if self.meta.index_type != "hnsw":
            raise ValueError("only HNSW has efSearch")
        query_ids, queries = self._sample_queries(sample, seed)
        self.meta.params["target_recall"] = target_recall
        if not len(queries):  # nothing to measure on yet
            self.meta.params["efSearch"] = 64
            self.meta.recall_at_10 = None
            return 64
        exact = self._exact_ids(queries, 11)
        chosen, recall = EF_SEARCH_CANDIDATES[-1], 0.0
        for ef in EF_SEARCH_CANDIDATES:
            self.meta.params["efSearch"] = ef
            recall = _recall(self.search(queries, 11)[1], exact, query_ids, 10)
            if recall >= target_recall:
                chosen = ef
                break
        self.meta.params["efSearch"] = chosen
        self.meta.recall_at_10 = recall
        return chosen

    # ------------------------------------------------------------------------------- properties
    @property
    def dim(self) -> int:
        return self.meta.dim

    @property
    def count(self) -> int:
        """Live vectors (tombstoned HNSW entries excluded)."""
        return int(self._index.ntotal) - len(self._removed)

    @property
    def checkpoint_hash(self) -> str:
        return self.meta.checkpoint_hash

    @property
    def index_type(self) -> str:
        return self.meta.index_type

    @property
    def tombstones(self) -> int:
        return len(self._removed)

    def __len__(self) -> int:
        return self.count

    def ids(self) -> np.ndarray:
        """Sorted live clip ids."""
        with self._lock:
            all_ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
            removed = np.fromiter(self._removed, np.int64, len(self._removed))
        return np.sort(np.setdiff1d(all_ids, removed, assume_unique=True))

    # --------------------------------------------------------------------------------- mutation
    def add(self, ids: np.ndarray, embeddings: np.ndarray) -> None:
        """Add vectors; raises on an id already present (clip ids are never reused)."""
        ids = _as_ids(ids)
        embeddings = _as_vectors(embeddings, self.dim)
        if len(ids) != len(embeddings):
            raise ValueError(f"{len(ids)} ids for {len(embeddings)} embeddings")
        if not len(ids):
            return
        with self._lock:
            present = faiss.vector_to_array(self._index.id_map)
            clash = np.intersect1d(ids, present)
            if len(clash) or len(np.unique(ids)) != len(ids):
                raise ValueError(f"clip ids already in the index: {clash[:5].tolist()}")
            self._index.add_with_ids(embeddings, ids)
            self.meta.count = self.count

    def remove(self, ids: np.ndarray) -> int:
        """Remove clip ids (unknown ids are ignored); returns how many were live."""
        ids = _as_ids(ids)
        if not len(ids):
            return 0
        with self._lock:
            present = faiss.vector_to_array(self._index.id_map)
            live = np.setdiff1d(np.intersect1d(ids, present), list(self._removed) or [-1])
            if not len(live):
                return 0
            if self.meta.index_type == "flat":
                self._index.remove_ids(faiss.IDSelectorBatch(live))
            else:
                self._removed.update(int(i) for i in live)
            self.meta.count = self.count
            return len(live)

    def set_last_event_id(self, event_id: int) -> None:
        self.meta.last_event_id = int(event_id)

    # ----------------------------------------------------------------------------------- search
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` inner products and clip ids per query; missing slots are -1 (score -inf)."""
        queries = _as_vectors(np.atleast_2d(queries), self.dim)
        k = int(k)
        n = len(queries)
        if n == 0 or k <= 0 or self._index.ntotal == 0:
            return np.full((n, max(k, 0)), -np.inf, np.float32), np.full((n, max(k, 0)), -1, np.int64)
        with self._lock:
            params = self._search_params(k)
            scores, ids = self._index.search(queries, k, params=params)
        scores = scores.astype(np.float32)
        scores[ids < 0] = -np.inf
        return scores, ids.astype(np.int64)

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors for clip ids (for reranking); KeyError for an id not in the index."""
        ids = _as_ids(ids)
        if not len(ids):
            return np.empty((0, self.dim), np.float32)
        with self._lock:
            dead = [int(i) for i in ids if int(i) in self._removed]
            if dead:
                raise KeyError(f"clip ids not in the index: {dead[:5]}")
            try:
                return np.asarray(self._index.reconstruct_batch(ids), np.float32).reshape(-1, self.dim)
            except RuntimeError as exc:
                present = faiss.vector_to_array(self._index.id_map)
                missing = np.setdiff1d(ids, present)[:5].tolist()
                raise KeyError(f"clip ids not in the index: {missing}") from exc

    def recall_at_k(self, sample: int | np.ndarray = 200, k: int = 10, seed: int = 0) -> float:
        """Mean overlap of this index's top-``k`` with exact search's (1.0 for flat).

        ``sample`` is a number of stored vectors drawn as queries, nudged off the stored point and
        with their own id left out of both lists (finding itself would flatter the index), or
        explicit query vectors.
        """
        if isinstance(sample, np.ndarray):
            queries = _as_vectors(np.atleast_2d(sample), self.dim)
            query_ids = np.full(len(queries), -1, np.int64)
        else:
            query_ids, queries = self._sample_queries(int(sample), seed)
        if not len(queries):
            return 1.0
        found = self.search(queries, k + 1)[1]
        return _recall(found, self._exact_ids(queries, k + 1), query_ids, k)

    # ------------------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """Write atomically: the FAISS file under a fresh name, then the sidecar naming it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            name = f"clips-{secrets.token_hex(6)}.faiss"
            tmp = directory / f".{name}.tmp"
            faiss.write_index(self._index, str(tmp))
            _fsync_file(tmp)
            os.replace(tmp, directory / name)
            self.meta.file = name
            self.meta.count = self.count
            self.meta.removed_ids = sorted(self._removed)
            _atomic_write_text(directory / SIDECAR, json.dumps(asdict(self.meta), indent=1))
            _fsync_dir(directory)
        for old in directory.glob("clips-*.faiss"):
            if old.name != name:
                old.unlink(missing_ok=True)
        for stale in directory.glob(".clips-*.faiss.tmp"):
            stale.unlink(missing_ok=True)
        return directory / name

    @classmethod
    def read_meta(cls, directory: str | Path) -> IndexMeta:
        """The sidecar alone (cheap): for staleness and checkpoint checks before loading."""
        path = Path(directory) / SIDECAR
        if not path.is_file():
            raise IndexNotFoundError(
                f"no index in {directory}: build one with `photoscore index PATH` or `photoscore index --rebuild`"
            )
        try:
            raw = json.loads(path.read_text())
            known = {k: v for k, v in raw.items() if k in IndexMeta.__dataclass_fields__}
            return IndexMeta(**known)
        except (ValueError, TypeError) as exc:
            raise IndexLoadError(f"unreadable index metadata {path}: {exc}; run `photoscore index --rebuild`") from exc

    @classmethod
    def load(cls, directory: str | Path, expected_checkpoint_hash: str | None = None) -> ClipIndex:
        """Load an index; :class:`IndexMismatchError` when it belongs to another checkpoint."""
        meta = cls.read_meta(directory)
        if expected_checkpoint_hash is not None and meta.checkpoint_hash != expected_checkpoint_hash:
            raise IndexMismatchError(
                f"the index in {directory} was built with checkpoint {meta.checkpoint_hash[:12]} "
                f"but the model's checkpoint is {expected_checkpoint_hash[:12]}; their embeddings "
                "are not comparable. Rebuild the index for this model with "
                "`photoscore index --rebuild` (after re-indexing the music with this checkpoint), "
                "or serve the checkpoint the index was built with."
            )
        path = Path(directory) / meta.file
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise IndexLoadError(
                f"cannot read index file {path}: {str(exc).splitlines()[0]}; run `photoscore index --rebuild`"
            ) from exc
        if index.d != meta.dim:
            raise IndexMismatchError(f"index file {path} has dimension {index.d}, sidecar {meta.dim}")
        if not isinstance(index, faiss.IndexIDMap2):
            index = faiss.downcast_index(index)
        loaded = cls(index, meta)
        if loaded.count != meta.count:
            raise IndexLoadError(
                f"index file {path} holds {loaded.count} vectors but its sidecar says {meta.count}; "
                "run `photoscore index --rebuild`"
            )
        return loaded

    # ---------------------------------------------------------------------------------- helpers
    def _search_params(self, k: int) -> faiss.SearchParameters | None:
        selector = (
            faiss.IDSelectorNot(faiss.IDSelectorBatch(np.fromiter(self._removed, np.int64))) if self._removed else None
        )
        if self.meta.index_type == "hnsw":
            ef = max(int(self.meta.params.get("efSearch", 64)), k)
            params = faiss.SearchParametersHNSW(efSearch=ef)
            if selector is not None:
                params.sel = selector
                params._keep = selector  # the SWIG object must outlive the search call
            return params
        if selector is not None:
            params = faiss.SearchParameters(sel=selector)
            params._keep = selector
            return params
        return None

    def _live_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """All (ids, vectors) in storage order, tombstones excluded (for exact search)."""
        with self._lock:
            ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
            inner = faiss.downcast_index(self._index.index)
            storage = faiss.downcast_index(inner.storage) if hasattr(inner, "storage") else inner
            vectors = storage.reconstruct_n(0, storage.ntotal).reshape(-1, self.dim)
        if self._removed:
            keep = ~np.isin(ids, np.fromiter(self._removed, np.int64))
            ids, vectors = ids[keep], vectors[keep]
        return ids, np.ascontiguousarray(vectors, np.float32)

    def _exact_ids(self, queries: np.ndarray, k: int) -> np.ndarray:
        ids, vectors = self._live_vectors()
        if not len(ids):
            return np.full((len(queries), k), -1, np.int64)
        _, positions = faiss.knn(queries, vectors, min(k, len(ids)), metric=faiss.METRIC_INNER_PRODUCT)
        out = np.full((len(queries), k), -1, np.int64)
        out[:, : positions.shape[1]] = np.where(positions >= 0, ids[positions], -1)
        return out

    def _sample_queries(self, sample: int, seed: int, jitter: bool = True) -> tuple[np.ndarray, np.ndarray]:
        ids, vectors = self._live_vectors()
        if not len(ids) or sample <= 0:
            return np.empty(0, np.int64), np.empty((0, self.dim), np.float32)
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(len(ids), size=min(sample, len(ids)), replace=False))
        queries = vectors[pick]
        if jitter:
            # Real queries (photos) are near clips, not on them; a stored vector is a node of the
            # HNSW graph and finds its neighbours too easily. Nudge each to cosine ~0.8.
            noise = rng.standard_normal(queries.shape).astype(np.float32)
            noise *= 0.75 / np.linalg.norm(noise, axis=1, keepdims=True)
            queries = queries + noise
            queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        return ids[pick], np.ascontiguousarray(queries, np.float32)


def _recall(found: np.ndarray, exact: np.ndarray, query_ids: np.ndarray, k: int) -> float:
    """Mean |approx top-k ∩ exact top-k| / |exact top-k|, each query's own id removed first."""
    hits, total = 0, 0
    for row_found, row_exact, own in zip(found, exact, query_ids, strict=True):
        truth = [i for i in row_exact.tolist() if i >= 0 and i != own][:k]
        got = [i for i in row_found.tolist() if i >= 0 and i != own][:k]
        hits += len(set(truth) & set(got))
        total += len(truth)
    return hits / total if total else 1.0


def _as_ids(ids: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))


def _as_vectors(vectors: Any, dim: int | None) -> np.ndarray:
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.size == 0:
        return np.empty((0, dim or (arr.shape[-1] if arr.ndim == 2 else 0)), np.float32)
    if arr.ndim != 2 or (dim is not None and arr.shape[1] != dim):
        raise ValueError(f"expected vectors of shape [n, {dim or 'd'}], got {arr.shape}")
    return np.ascontiguousarray(arr)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
