"""IVF-PQ's exact float32 vectors by clip id: re-scoring and ``reconstruct`` read them here, from
memory-mapped files, so RAM holds only the compressed codes. Written and opened by
:mod:`.persistence`."""

from __future__ import annotations

from collections.abc import Iterator

import faiss
import numpy as np

from app.core.vector_index.arrays import as_ids, isin_sorted


class VectorStore:
    """Exact float32 vectors by clip id, for IVF-PQ re-scoring and ``reconstruct``.

    A base (sorted ids + rows; memory-mapped ``.npy`` files once saved or loaded) plus a small
    in-memory overlay of vectors added since, and the base ids removed since. Saving writes a
    merged copy only when something changed.
    """

    def __init__(self, dim: int, ids: np.ndarray | None = None, vectors: np.ndarray | None = None) -> None:
        self.dim = int(dim)
        self._ids = np.zeros(0, np.int64) if ids is None else ids
        self._vecs = np.zeros((0, self.dim), np.float32) if vectors is None else vectors
        self._extra_ids = np.zeros(0, np.int64)
        self._extra_vecs = np.zeros((0, self.dim), np.float32)
        self._dead = np.zeros(0, np.int64)  # base ids removed since (sorted)
        self.files: tuple[str, str] | None = None  # (ids file, vectors file) holding exactly this

    @classmethod
    def from_arrays(cls, ids: np.ndarray, vectors: np.ndarray) -> VectorStore:
        order = None if len(ids) < 2 or bool(np.all(ids[1:] > ids[:-1])) else np.argsort(ids, kind="stable")
        if order is None:
            return cls(vectors.shape[1], ids, vectors)
        return cls(vectors.shape[1], ids[order], np.ascontiguousarray(vectors[order]))

    def __len__(self) -> int:
        return len(self._ids) - len(self._dead) + len(self._extra_ids)

    def ids(self) -> np.ndarray:
        """Sorted live ids."""
        base = np.asarray(self._ids)
        if len(self._dead):
            base = base[~isin_sorted(base, self._dead)]
        return np.union1d(base, self._extra_ids) if len(self._extra_ids) else np.array(base, np.int64)

    def contains(self, ids: np.ndarray) -> np.ndarray:
        in_base = isin_sorted(ids, self._ids) & ~isin_sorted(ids, self._dead)
        return in_base | isin_sorted(ids, self._extra_ids)

    def get(self, ids: np.ndarray) -> np.ndarray:
        """Rows for ``ids`` (any order); KeyError for an id not held."""
        ids = as_ids(ids)
        out = np.empty((len(ids), self.dim), np.float32)
        if not len(ids):
            return out
        pos = np.clip(np.searchsorted(self._ids, ids), 0, max(len(self._ids) - 1, 0))
        in_base = (
            (self._ids[pos] == ids) & ~isin_sorted(ids, self._dead) if len(self._ids) else np.zeros(len(ids), bool)
        )
        epos = np.clip(np.searchsorted(self._extra_ids, ids), 0, max(len(self._extra_ids) - 1, 0))
        in_extra = (self._extra_ids[epos] == ids) & ~in_base if len(self._extra_ids) else np.zeros(len(ids), bool)
        missing = ~(in_base | in_extra)
        if missing.any():
            raise KeyError(f"clip ids not in the index: {ids[missing][:5].tolist()}")
        if in_base.any():
            rows = pos[in_base]
            order = np.argsort(rows, kind="stable")  # ascending reads from the memory map
            got = np.empty((len(rows), self.dim), np.float32)
            got[order] = self._vecs[rows[order]]
            out[in_base] = got
        if in_extra.any():
            out[in_extra] = self._extra_vecs[epos[in_extra]]
        return out

    def copy(self) -> VectorStore:
        """An independent store sharing the (read-only, memory-mapped) base rows."""
        twin = VectorStore(self.dim, self._ids, self._vecs)
        twin._extra_ids, twin._extra_vecs, twin._dead = self._extra_ids, self._extra_vecs, self._dead
        twin.files = self.files
        return twin  # add/remove replace these arrays, never write into them: sharing is safe

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        all_ids = np.concatenate([self._extra_ids, ids])
        order = np.argsort(all_ids, kind="stable")
        self._extra_ids = all_ids[order]
        self._extra_vecs = np.concatenate([self._extra_vecs, vectors])[order]
        self.files = None

    def remove(self, ids: np.ndarray) -> None:
        ids = np.unique(as_ids(ids))
        if len(self._extra_ids):
            keep = ~isin_sorted(self._extra_ids, ids)
            self._extra_ids, self._extra_vecs = self._extra_ids[keep], self._extra_vecs[keep]
        base_hit = ids[isin_sorted(ids, self._ids)]
        if len(base_hit):
            self._dead = np.union1d(self._dead, base_hit)
        self.files = None

    def chunks(self, size: int = 1 << 18) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Live ``(ids, vectors)`` in chunks of the base, then the overlay (exact search)."""
        for lo in range(0, len(self._ids), size):
            ids = np.asarray(self._ids[lo : lo + size])
            vecs = np.asarray(self._vecs[lo : lo + size], np.float32)
            if len(self._dead):
                keep = ~isin_sorted(ids, self._dead)
                ids, vecs = ids[keep], vecs[keep]
            yield ids, vecs
        if len(self._extra_ids):
            yield self._extra_ids, self._extra_vecs

    def exact_ids(self, queries: np.ndarray, k: int) -> np.ndarray:
        """Exact top-``k`` ids over a store too big to copy: per chunk, then merged."""
        best_s = np.full((len(queries), 0), -np.inf, np.float32)
        best_i = np.full((len(queries), 0), -1, np.int64)
        for ids, vecs in self.chunks():
            if not len(ids):
                continue
            s, pos = faiss.knn(queries, vecs, min(k, len(ids)), metric=faiss.METRIC_INNER_PRODUCT)
            s = np.concatenate([best_s, s], axis=1)
            i = np.concatenate([best_i, np.where(pos >= 0, ids[np.maximum(pos, 0)], -1)], axis=1)
            top = np.argsort(-s, axis=1, kind="stable")[:, :k]
            best_s, best_i = np.take_along_axis(s, top, 1), np.take_along_axis(i, top, 1)
        out = np.full((len(queries), k), -1, np.int64)
        out[:, : best_i.shape[1]] = best_i
        return out
