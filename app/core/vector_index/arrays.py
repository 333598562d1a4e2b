"""Array coercions shared by the index types: ids are int64 clip ids, vectors float32 rows."""

from __future__ import annotations

from typing import Any

import numpy as np


def as_ids(ids: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))


def as_vectors(vectors: Any, dim: int | None) -> np.ndarray:
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.size == 0:
        return np.empty((0, dim or (arr.shape[-1] if arr.ndim == 2 else 0)), np.float32)
    if arr.ndim != 2 or (dim is not None and arr.shape[1] != dim):
        raise ValueError(f"expected vectors of shape [n, {dim or 'd'}], got {arr.shape}")
    return np.ascontiguousarray(arr)


def isin_sorted(values: np.ndarray, sorted_ref: np.ndarray) -> np.ndarray:
    """``np.isin`` against a sorted array (a memory map is searched, never copied)."""
    values = np.asarray(values, np.int64)
    if not len(sorted_ref) or not len(values):
        return np.zeros(len(values), bool)
    pos = np.clip(np.searchsorted(sorted_ref, values), 0, len(sorted_ref) - 1)
    return np.asarray(sorted_ref[pos] == values)
