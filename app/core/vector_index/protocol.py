"""The one interface :class:`ClipIndex` uses for every index type, so the type-specific parts
(how to search, delete, reconstruct, measure exactly) live in one small class each instead of
branches through the facade. The facade validates arguments, keeps the metadata and the lock."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

import numpy as np

from app.core.vector_index.store import VectorStore

# Held around FAISS calls while the index may change (a no-op once it is frozen).
Lock = AbstractContextManager[Any]


class IndexBackend(Protocol):
    """One index type: its FAISS object, the ids it holds, and how they are searched."""

    kind: str  # the sidecar's index_type
    index: Any  # the FAISS object written to clips-<token>.faiss (stubs lack the wrappers' members)
    removed: set[int]  # tombstoned ids (HNSW cannot delete); recorded in the sidecar
    store: VectorStore | None  # exact vectors kept beside FAISS (IVF-PQ), else None

    @property
    def count(self) -> int:
        """Live vectors."""
        ...

    def ids(self) -> np.ndarray:
        """Sorted live clip ids."""
        ...

    def clashes(self, ids: np.ndarray) -> np.ndarray:
        """Those of ``ids`` already held (clip ids are never reused)."""
        ...

    def add(self, ids: np.ndarray, embeddings: np.ndarray) -> None: ...

    def remove(self, ids: np.ndarray) -> int:
        """Drop the live ones of ``ids``; returns how many there were."""
        ...

    def search(self, queries: np.ndarray, k: int, params: dict[str, Any], lock: Lock) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` scores and ids, searched with the sidecar's ``params``; -1 / -inf pad."""
        ...

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors; KeyError for an id not held."""
        ...

    def exact_ids(self, queries: np.ndarray, k: int, lock: Lock) -> np.ndarray:
        """Brute-force top-``k`` ids over the live vectors (the recall reference)."""
        ...

    def query_pool(self, lock: Lock) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
        """Live ids and a function giving the vectors at positions of them (recall samples)."""
        ...

    def copy(self) -> IndexBackend:
        """An independent mutable copy."""
        ...
