"""``ClipIndex``: the one object callers hold. It checks arguments, keeps the sidecar metadata and
the lock, and hands the type-specific work to an :class:`IndexBackend` (exact, HNSW or IVF-PQ),
the files to :mod:`.persistence` and recall to :mod:`.tuning`."""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from app.core.vector_index import persistence, tuning
from app.core.vector_index.arrays import as_ids, as_vectors
from app.core.vector_index.exact import ExactBackend
from app.core.vector_index.hnsw import HnswBackend
from app.core.vector_index.ivfpq import IvfPqBackend, IvfPqParams
from app.core.vector_index.meta import IndexMeta, IndexPolicy
from app.core.vector_index.protocol import IndexBackend
from app.core.vector_index.store import VectorStore


class ClipIndex:
    """A thread-safe FAISS index of clip embeddings keyed by clip id, with its metadata.

    Exact and HNSW wrap the FAISS index in ``IndexIDMap2``; IVF-PQ keeps the ids in its inverted
    lists (an ``IDMap2`` reverse map would cost more RAM per clip than the codes) and holds the
    float vectors in a :class:`VectorStore`.
    """

    def __init__(self, backend: IndexBackend, meta: IndexMeta) -> None:
        self._backend = backend
        self.meta = meta
        self._lock: threading.Lock | contextlib.nullcontext[None] = threading.Lock()
        self.frozen = False  # see freeze()

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def build(
        cls,
        ids: np.ndarray,
        embeddings: np.ndarray,
        *,
        checkpoint_hash: str,
        policy: IndexPolicy = IndexPolicy(),
        dim: int | None = None,
        index_type: str = "auto",
        hnsw_m: int = 32,
        ef_construction: int = 80,
        ef_search: int | None = None,
        target_recall: float = 0.95,
        recall_sample: int = 200,
        last_event_id: int = 0,
        seed: int = 0,
        nlist: int | None = None,
        pq_m: int | None = None,
        nprobe: int | None = None,
    ) -> ClipIndex:
        """Index ``embeddings`` under ``ids``: the type ``policy`` gives for their number (exact,
        HNSW, IVF-PQ) unless ``index_type`` names one.

        ``ef_search=None`` (``nprobe=None``) tunes it: the smallest candidate whose recall@10 on
        ``recall_sample`` stored vectors used as queries reaches ``target_recall`` (IVF-PQ: when
        searched for ``policy.search_k`` candidates, as the service does).
        """
        ids = as_ids(ids)
        embeddings = as_vectors(embeddings, dim)
        d = int(embeddings.shape[1]) if embeddings.shape[1] else int(dim or 0)
        if d <= 0:
            raise ValueError("cannot infer the dimension of an empty index; pass dim=")
        if len(ids) != len(embeddings):
            raise ValueError(f"{len(ids)} ids for {len(embeddings)} embeddings")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("duplicate clip ids")
        kind = policy.index_type(len(ids)) if index_type == "auto" else index_type
        # Key order is the sidecar's: the threshold that chose the type, then the type's own.
        params: dict[str, Any] = {"exact_threshold": int(policy.exact_threshold)}
        backend: IndexBackend
        knob: int | None = None
        if kind == "ivfpq":
            spec = IvfPqParams(nlist=nlist, pq_m=pq_m, nprobe=nprobe, search_k=policy.search_k, seed=seed)
            backend, built_params = IvfPqBackend.build(ids, embeddings, d, spec)
            params.update(compressed_threshold=int(policy.compressed_threshold), **built_params)
            knob = spec.nprobe
        elif kind == "flat":
            backend = ExactBackend.build(ids, embeddings, d)
        elif kind == "hnsw":
            backend = HnswBackend.build(ids, embeddings, d, hnsw_m, ef_construction)
            params.update(M=hnsw_m, efConstruction=ef_construction)
            knob = ef_search
        else:
            raise ValueError(f"unknown index type {index_type!r} (auto, flat, hnsw or ivfpq)")
        meta = IndexMeta(
            checkpoint_hash=checkpoint_hash,
            dim=d,
            count=len(ids),
            index_type=kind,
            params=params,
            last_event_id=int(last_event_id),
            built_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        built = cls(backend, meta)
        tuning.tune_or_measure(built, knob, target_recall=target_recall, sample=recall_sample, seed=seed)
        return built

    def tune_nprobe(self, target_recall: float = 0.95, *, sample: int = 200, seed: int = 0) -> int:
        """IVF-PQ's ``nprobe`` for ``target_recall`` (see :func:`.tuning.tune_nprobe`); records it."""
        return tuning.tune_nprobe(self, target_recall, sample=sample, seed=seed)

    def tune_ef_search(self, target_recall: float = 0.95, *, sample: int = 200, seed: int = 0) -> int:
        """Pick the smallest ``efSearch`` reaching ``target_recall`` at k=10; records it."""
        return tuning.tune_ef_search(self, target_recall, sample=sample, seed=seed)

    # ------------------------------------------------------------------------------- properties
    @property
    def dim(self) -> int:
        return self.meta.dim

    @property
    def count(self) -> int:
        """Live vectors (tombstoned HNSW entries excluded)."""
        return self._backend.count

    @property
    def store(self) -> VectorStore | None:
        """IVF-PQ's exact vectors (None for the other types, which hold them in FAISS)."""
        return self._backend.store

    @property
    def checkpoint_hash(self) -> str:
        return self.meta.checkpoint_hash

    @property
    def index_type(self) -> str:
        return self.meta.index_type

    @property
    def tombstones(self) -> int:
        return len(self._backend.removed)

    @property
    def _index(self) -> Any:
        """The FAISS object itself (benchmarks measure its file size)."""
        return self._backend.index

    def __len__(self) -> int:
        return self.count

    def ids(self) -> np.ndarray:
        """Sorted live clip ids."""
        with self._lock:
            return self._backend.ids()

    # ------------------------------------------------------------------------- read-only sharing
    def freeze(self) -> ClipIndex:
        """Make this index read-only, so searches need no lock and run in parallel.

        FAISS searches are safe to run concurrently as long as nothing mutates the index; a frozen
        index refuses ``add``/``remove`` (change a :meth:`thawed_copy` instead)."""
        self.frozen = True
        self._lock = contextlib.nullcontext()
        return self

    def thawed_copy(self) -> ClipIndex:
        """A mutable copy (FAISS ``clone_index``; an IVF-PQ store shares its memory-mapped base)."""
        with self._lock:
            return ClipIndex(self._backend.copy(), copy.deepcopy(self.meta))

    def _writable(self) -> None:
        if self.frozen:
            raise RuntimeError("this index is frozen (shared by readers); change a thawed_copy()")

    # --------------------------------------------------------------------------------- mutation
    def add(self, ids: np.ndarray, embeddings: np.ndarray) -> None:
        """Add vectors; raises on an id already present (clip ids are never reused)."""
        self._writable()
        ids = as_ids(ids)
        embeddings = as_vectors(embeddings, self.dim)
        if len(ids) != len(embeddings):
            raise ValueError(f"{len(ids)} ids for {len(embeddings)} embeddings")
        if not len(ids):
            return
        with self._lock:
            clash = self._backend.clashes(ids)
            if len(clash) or len(np.unique(ids)) != len(ids):
                raise ValueError(f"clip ids already in the index: {clash[:5].tolist()}")
            self._backend.add(ids, embeddings)
            self.meta.count = self.count

    def remove(self, ids: np.ndarray) -> int:
        """Remove clip ids (unknown ids are ignored); returns how many were live."""
        self._writable()
        ids = as_ids(ids)
        if not len(ids):
            return 0
        with self._lock:
            removed = self._backend.remove(ids)
            if removed:
                self.meta.count = self.count
            return removed

    def set_last_event_id(self, event_id: int) -> None:
        self.meta.last_event_id = int(event_id)

    # ----------------------------------------------------------------------------------- search
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` inner products and clip ids per query; missing slots are -1 (score -inf)."""
        queries = as_vectors(np.atleast_2d(queries), self.dim)
        k = int(k)
        n = len(queries)
        if n == 0 or k <= 0 or self._backend.index.ntotal == 0:
            return np.full((n, max(k, 0)), -np.inf, np.float32), np.full((n, max(k, 0)), -1, np.int64)
        return self._backend.search(queries, k, self.meta.params, self._lock)

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors for clip ids (for reranking); KeyError for an id not in the index."""
        ids = as_ids(ids)
        if not len(ids):
            return np.empty((0, self.dim), np.float32)
        with self._lock:
            return self._backend.reconstruct(ids)

    def recall_at_k(self, sample: int | np.ndarray = 200, k: int = 10, seed: int = 0) -> float:
        """Mean overlap of this index's top-``k`` with exact search's (see :func:`.tuning.recall_at_k`)."""
        return tuning.recall_at_k(self, sample, k, seed)

    def exact_ids(self, queries: np.ndarray, k: int) -> np.ndarray:
        """Brute-force top-``k`` ids (the reference recall is measured against)."""
        return self._backend.exact_ids(queries, k, self._lock)

    def query_pool(self) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
        """Live ids and a function giving the vectors at positions of them (recall samples)."""
        return self._backend.query_pool(self._lock)

    # ------------------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """Write atomically: the FAISS file under a fresh name, then the sidecar naming it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            path = persistence.save_index(directory, self._backend, self.meta)
        persistence.remove_stale(directory, self.meta)
        return path

    @classmethod
    def read_meta(cls, directory: str | Path) -> IndexMeta:
        """The sidecar alone (cheap): for staleness and checkpoint checks before loading."""
        return persistence.read_meta(directory)

    @classmethod
    def load(cls, directory: str | Path, expected_checkpoint_hash: str | None = None) -> ClipIndex:
        """Load an index; :class:`IndexMismatchError` when it belongs to another checkpoint."""
        meta = persistence.read_meta(directory)
        persistence.check_checkpoint(directory, meta, expected_checkpoint_hash)
        return cls(persistence.load_backend(directory, meta), meta)
