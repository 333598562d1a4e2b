"""IVF-PQ for very large catalogues: product-quantised codes (``M`` bytes + an 8-byte id per clip
in RAM) trained on a sample, searched for a few times more candidates than asked, which are then
re-scored exactly against the float32 vectors of a memory-mapped :class:`VectorStore`.

The ids live in the inverted lists (an ``IDMap2`` reverse map would cost more RAM per clip than
the codes), and deletion is real, so there are no tombstones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from app.core.vector_index.meta import DEFAULT_SEARCH_K
from app.core.vector_index.protocol import Lock
from app.core.vector_index.store import VectorStore
from app.core.vector_index.tuning import choose_ivfpq_layout

IVF_K_FACTOR = 4  # PQ candidates per wanted result, re-scored exactly
IVF_MIN_CANDIDATES = 256  # never re-score fewer than this
IVF_MAX_CANDIDATES = 65_536
DEFAULT_NPROBE = 16  # a sidecar without one (never written by a build)
_ADD_STEP = 1 << 18  # vectors per add_with_ids call (bounds the float32 copy of a memory map)


@dataclass(frozen=True)
class IvfPqParams:
    """How to build an IVF-PQ index; ``None`` picks the value from the catalogue (see
    :mod:`.tuning`): ``nlist`` and ``pq_m`` from its size and dimension, ``nprobe`` by recall."""

    nlist: int | None = None  # inverted lists
    pq_m: int | None = None  # sub-quantisers (bytes per code); must divide the dimension
    nprobe: int | None = None  # lists searched per query
    search_k: int = DEFAULT_SEARCH_K  # the candidate count the service searches for
    seed: int = 0  # training sample and k-means


class IvfPqBackend:
    """``IndexIVFPQ`` candidates re-scored by exact inner product with the stored float vectors."""

    kind = "ivfpq"

    def __init__(self, index: Any, store: VectorStore, removed: set[int] | None = None) -> None:
        self.index = index
        self.store: VectorStore | None = store
        self.removed: set[int] = set() if removed is None else removed

    @property
    def _vectors(self) -> VectorStore:
        assert self.store is not None  # always set; Optional only to match the protocol
        return self.store

    @classmethod
    def build(
        cls, ids: np.ndarray, embeddings: np.ndarray, dim: int, spec: IvfPqParams
    ) -> tuple[IvfPqBackend, dict[str, Any]]:
        """Train on a sample, add everything, keep the float vectors aside for re-scoring; returns
        the backend and the parameters the sidecar records.

        L2 on unit vectors ranks like inner product and lets FAISS use precomputed PQ tables;
        re-scoring is by exact inner product.
        """
        n = len(ids)
        layout = choose_ivfpq_layout(n, dim, spec.nlist, spec.pq_m)
        rng = np.random.default_rng(spec.seed)
        train_n = layout.train_n
        pick = np.sort(rng.choice(n, size=train_n, replace=False)) if train_n < n else np.arange(n)
        sample = np.ascontiguousarray(embeddings[pick], np.float32)
        quantizer = faiss.IndexFlatL2(dim)
        inner = faiss.IndexIVFPQ(quantizer, dim, layout.nlist, layout.m, 8)
        inner.cp.seed = spec.seed
        inner.cp.niter = 10
        inner.pq.cp.niter = 15
        inner.pq.cp.max_points_per_centroid = 64  # 16k points per sub-quantiser is plenty for 256 codes
        inner.train(sample)
        del sample
        inner.use_precomputed_table = 1
        inner.precompute_table()
        for lo in range(0, n, _ADD_STEP):
            chunk = np.ascontiguousarray(embeddings[lo : lo + _ADD_STEP], np.float32)
            inner.add_with_ids(chunk, ids[lo : lo + _ADD_STEP])
        params = {
            "nlist": layout.nlist,
            "M": layout.m,
            "nbits": 8,
            "trained_on": int(train_n),
            "trained_count": int(n),
            "k_factor": IVF_K_FACTOR,
            "min_candidates": IVF_MIN_CANDIDATES,
            "search_k": int(spec.search_k),
        }
        return cls(inner, VectorStore.from_arrays(ids, embeddings)), params

    @property
    def count(self) -> int:
        return int(self.index.ntotal) - len(self.removed)

    def ids(self) -> np.ndarray:
        return self._vectors.ids()

    def clashes(self, ids: np.ndarray) -> np.ndarray:
        return ids[self._vectors.contains(ids)]

    def add(self, ids: np.ndarray, embeddings: np.ndarray) -> None:
        self.index.add_with_ids(embeddings, ids)
        self._vectors.add(ids, embeddings)

    def remove(self, ids: np.ndarray) -> int:
        live = np.unique(ids[self._vectors.contains(ids)])
        if len(live):
            self.index.remove_ids(faiss.IDSelectorBatch(live))
            self._vectors.remove(live)
        return len(live)

    def search(self, queries: np.ndarray, k: int, params: dict[str, Any], lock: Lock) -> tuple[np.ndarray, np.ndarray]:
        """PQ candidates (``k_factor`` x ``k``, at least ``min_candidates``), re-scored exactly."""
        store = self._vectors
        n = len(queries)
        factor, floor = int(params.get("k_factor", IVF_K_FACTOR)), int(params.get("min_candidates", 0))
        c = int(min(max(k * factor, floor), IVF_MAX_CANDIDATES))
        c = max(k, min(c, int(self.index.ntotal)))
        with lock:
            ivf = faiss.SearchParametersIVF(nprobe=int(params.get("nprobe", DEFAULT_NPROBE)))  # type: ignore[call-arg]
            _, cand = self.index.search(queries, c, params=ivf)
            flat = cand[cand >= 0]
            uniq, inverse = np.unique(flat, return_inverse=True)
            vecs = store.get(uniq) if len(uniq) else np.zeros((0, store.dim), np.float32)
        out_s = np.full((n, k), -np.inf, np.float32)
        out_i = np.full((n, k), -1, np.int64)
        at = 0
        for row in range(n):
            valid = cand[row] >= 0
            m = int(valid.sum())
            if not m:
                continue
            rows = inverse[at : at + m]
            at += m
            scores = vecs[rows] @ queries[row]
            ids = cand[row][valid]
            top = np.lexsort((ids, -scores))[:k]
            out_s[row, : len(top)] = scores[top]
            out_i[row, : len(top)] = ids[top]
        return out_s, out_i

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        return self._vectors.get(ids)

    def exact_ids(self, queries: np.ndarray, k: int, lock: Lock) -> np.ndarray:
        return self._vectors.exact_ids(queries, k)  # reads the store in chunks: never copies it whole

    def query_pool(self, lock: Lock) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
        store = self._vectors
        ids = store.ids()  # never copy every vector of a big index
        return ids, lambda pick: store.get(ids[pick])

    def copy(self) -> IvfPqBackend:
        """A clone of the codes; the store shares its memory-mapped base."""
        return IvfPqBackend(faiss.clone_index(self.index), self._vectors.copy(), set(self.removed))
