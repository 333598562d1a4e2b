"""Exact search (``IndexFlatIP``) for small catalogues: recall is 1 by construction, and FAISS
deletes rows outright, so no tombstones pile up."""

from __future__ import annotations

import faiss
import numpy as np

from app.core.vector_index.idmap import IdMapBackend


class ExactBackend(IdMapBackend):
    """Brute-force inner product over every stored vector."""

    kind = "flat"

    @classmethod
    def build(cls, ids: np.ndarray, embeddings: np.ndarray, dim: int) -> IdMapBackend:
        return cls.wrap(faiss.IndexFlatIP(dim), ids, embeddings)

    def _delete(self, live: np.ndarray) -> None:
        self.index.remove_ids(faiss.IDSelectorBatch(live))
