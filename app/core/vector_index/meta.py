"""What an index is: the operator's policy choosing its type, the sidecar's record of it, and the
errors a load raises. Kept apart from FAISS so settings and callers can use them cheaply."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.core.settings import Settings

FORMAT_VERSION = 1
DEFAULT_COMPRESSED_THRESHOLD = 2_000_000  # clips from which IVF-PQ replaces HNSW (settings)
DEFAULT_SEARCH_K = 256  # the service's FAISS candidates (settings.search_k): recall is tuned there


class IndexLoadError(ValueError):
    """The index directory cannot be used; the message says why and what to run."""


class IndexNotFoundError(IndexLoadError, FileNotFoundError):
    """No index has been written to the directory yet."""


class IndexMismatchError(IndexLoadError):
    """The index was built from another checkpoint's embeddings (or another dimension)."""


@dataclass(frozen=True)
class IndexPolicy:
    """Which index a catalogue of a given size gets, and the candidate count its recall is tuned
    for: the operator's settings, handed as one value to everything that builds or loads one."""

    exact_threshold: int = 200_000  # clips below which search is exact (flat)
    compressed_threshold: int = DEFAULT_COMPRESSED_THRESHOLD  # clips from which IVF-PQ replaces HNSW
    search_k: int = DEFAULT_SEARCH_K  # FAISS candidates per query (IVF-PQ's nprobe is tuned for it)

    @classmethod
    def from_settings(cls, settings: Settings) -> IndexPolicy:
        return cls(settings.exact_index_threshold, settings.compressed_index_threshold, settings.search_k)

    def index_type(self, n: int) -> str:
        """``flat`` below ``exact_threshold`` clips, ``ivfpq`` from ``compressed_threshold``, else ``hnsw``."""
        if n < self.exact_threshold:
            return "flat"
        return "ivfpq" if n >= self.compressed_threshold else "hnsw"


@dataclass
class IndexMeta:
    """What the sidecar records about an index (field order is the sidecar's key order)."""

    checkpoint_hash: str
    dim: int
    count: int
    index_type: str  # "flat" (exact), "hnsw" or "ivfpq"
    params: dict[str, Any] = field(default_factory=dict)
    last_event_id: int = 0
    built_at: str = ""
    recall_at_10: float | None = None  # None for exact search (recall is 1 by construction)
    file: str = ""
    removed_ids: list[int] = field(default_factory=list)
    vectors_file: str = ""  # ivfpq: float32 vectors for exact re-scoring (memory-mapped)
    vector_ids_file: str = ""  # ivfpq: their clip ids, sorted
    format_version: int = FORMAT_VERSION
