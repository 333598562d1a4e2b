"""What exact and HNSW search share: a FAISS index wrapped in ``IndexIDMap2``, so FAISS itself maps
clip ids to rows and hands the vectors back for ``reconstruct`` and exact measurement."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faiss
import numpy as np

from app.core.vector_index.protocol import Lock
from app.core.vector_index.store import VectorStore


class IdMapBackend:
    """An ``IndexIDMap2`` and its tombstones; subclasses say how ids are deleted and searched."""

    kind = ""
    store: VectorStore | None = None

    def __init__(self, index: Any, removed: set[int] | None = None) -> None:
        self.index = index
        self.removed: set[int] = set() if removed is None else removed

    @classmethod
    def wrap(cls, inner: faiss.Index, ids: np.ndarray, embeddings: np.ndarray) -> IdMapBackend:
        index = faiss.IndexIDMap2(inner)
        if len(ids):
            index.add_with_ids(embeddings, ids)
        return cls(index)

    @property
    def count(self) -> int:
        return int(self.index.ntotal) - len(self.removed)

    def ids(self) -> np.ndarray:
        all_ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        removed = np.fromiter(self.removed, np.int64, len(self.removed))
        return np.sort(np.setdiff1d(all_ids, removed, assume_unique=True))

    def clashes(self, ids: np.ndarray) -> np.ndarray:
        return np.intersect1d(ids, faiss.vector_to_array(self.index.id_map))

    def add(self, ids: np.ndarray, embeddings: np.ndarray) -> None:
        self.index.add_with_ids(embeddings, ids)

    def remove(self, ids: np.ndarray) -> int:
        present = faiss.vector_to_array(self.index.id_map)
        live = np.setdiff1d(np.intersect1d(ids, present), list(self.removed) or [-1])
        if len(live):
            self._delete(live)
        return len(live)

    def _delete(self, live: np.ndarray) -> None:
        """Tombstones by default: searches exclude them with an ``IDSelector``."""
        self.removed.update(int(i) for i in live)

    def search(self, queries: np.ndarray, k: int, params: dict[str, Any], lock: Lock) -> tuple[np.ndarray, np.ndarray]:
        with lock:
            search_params = self._search_params(k, params)
            scores, ids = self.index.search(queries, k, params=search_params)
        scores = scores.astype(np.float32)
        scores[ids < 0] = -np.inf
        return scores, ids.astype(np.int64)

    def _search_params(self, k: int, params: dict[str, Any]) -> faiss.SearchParameters | None:
        selector = self._selector()
        if selector is None:
            return None
        search_params: Any = faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]  # SWIG keyword init
        search_params._keep = selector
        return search_params

    def _selector(self) -> Any:
        if not self.removed:
            return None
        return faiss.IDSelectorNot(faiss.IDSelectorBatch(np.fromiter(self.removed, np.int64)))

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        dead = [int(i) for i in ids if int(i) in self.removed]
        if dead:
            raise KeyError(f"clip ids not in the index: {dead[:5]}")
        try:
            return np.asarray(self.index.reconstruct_batch(ids), np.float32).reshape(-1, self.index.d)
        except RuntimeError as exc:
            present = faiss.vector_to_array(self.index.id_map)
            missing = np.setdiff1d(ids, present)[:5].tolist()
            raise KeyError(f"clip ids not in the index: {missing}") from exc

    def live_vectors(self, lock: Lock) -> tuple[np.ndarray, np.ndarray]:
        """All (ids, vectors) in storage order, tombstones excluded (for exact search)."""
        with lock:
            ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
            inner = faiss.downcast_index(self.index.index)
            storage = faiss.downcast_index(inner.storage) if hasattr(inner, "storage") else inner
            vectors = storage.reconstruct_n(0, storage.ntotal).reshape(-1, self.index.d)
        if self.removed:
            keep = ~np.isin(ids, np.fromiter(self.removed, np.int64))
            ids, vectors = ids[keep], vectors[keep]
        return ids, np.ascontiguousarray(vectors, np.float32)

    def exact_ids(self, queries: np.ndarray, k: int, lock: Lock) -> np.ndarray:
        ids, vectors = self.live_vectors(lock)
        if not len(ids):
            return np.full((len(queries), k), -1, np.int64)
        _, positions = faiss.knn(queries, vectors, min(k, len(ids)), metric=faiss.METRIC_INNER_PRODUCT)
        out = np.full((len(queries), k), -1, np.int64)
        out[:, : positions.shape[1]] = np.where(positions >= 0, ids[positions], -1)
        return out

    def query_pool(self, lock: Lock) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
        ids, vectors = self.live_vectors(lock)
        return ids, vectors.__getitem__

    def copy(self) -> IdMapBackend:
        return type(self)(faiss.clone_index(self.index), set(self.removed))
