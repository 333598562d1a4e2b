"""HNSW (``IndexHNSWFlat``) for mid-sized catalogues. The graph cannot delete, so removed ids are
tombstones that searches exclude with an ``IDSelector`` (the indexer rebuilds when they pile up);
``efSearch`` comes from the sidecar, where tuning put it."""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

from app.core.vector_index.idmap import IdMapBackend

DEFAULT_EF_SEARCH = 64  # before tuning has run (an empty index)


class HnswBackend(IdMapBackend):
    """An HNSW graph over inner product, with tombstones."""

    kind = "hnsw"

    @classmethod
    def build(cls, ids: np.ndarray, embeddings: np.ndarray, dim: int, m: int, ef_construction: int) -> IdMapBackend:
        inner = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = ef_construction
        return cls.wrap(inner, ids, embeddings)

    def _search_params(self, k: int, params: dict[str, Any]) -> faiss.SearchParameters | None:
        ef = max(int(params.get("efSearch", DEFAULT_EF_SEARCH)), k)
        search_params: Any = faiss.SearchParametersHNSW(efSearch=ef)  # type: ignore[attr-defined]  # not in the stubs
        selector = self._selector()
        if selector is not None:
            search_params.sel = selector
            search_params._keep = selector  # the SWIG object must outlive the search call
        return search_params
