"""FAISS index over clip embeddings; ids are catalogue clip ids, never row positions.

Vectors are L2-normalised, so inner product ranks like cosine similarity. Small catalogues use
exact search (``IndexFlatIP``, :mod:`.exact`); large ones HNSW (:mod:`.hnsw`) with ``efSearch``
tuned on a sample until recall@10 against exact search reaches a target; very large ones IVF-PQ
(:mod:`.ivfpq`): compressed codes in RAM, candidates re-scored exactly against float32 vectors
memory-mapped from disk. :class:`ClipIndex` (:mod:`.index`) is what callers hold; each type sits
behind :class:`IndexBackend` (:mod:`.protocol`), the files are :mod:`.persistence`'s and recall
measurement and tuning :mod:`.tuning`'s.

On disk, a directory holds ``clips-<token>.faiss`` (and for IVF-PQ ``vectors-<token>.npy`` and
``vector-ids-<token>.npy``) plus ``index.json`` naming them; the JSON is replaced last (temp
file, fsync, ``os.replace``), so readers always see a matching set.
"""

from app.core.vector_index.exact import ExactBackend
from app.core.vector_index.hnsw import HnswBackend
from app.core.vector_index.index import ClipIndex
from app.core.vector_index.ivfpq import (
    IVF_K_FACTOR,
    IVF_MAX_CANDIDATES,
    IVF_MIN_CANDIDATES,
    IvfPqBackend,
    IvfPqParams,
)
from app.core.vector_index.meta import (
    DEFAULT_COMPRESSED_THRESHOLD,
    DEFAULT_SEARCH_K,
    FORMAT_VERSION,
    IndexLoadError,
    IndexMeta,
    IndexMismatchError,
    IndexNotFoundError,
    IndexPolicy,
)
from app.core.vector_index.persistence import SIDECAR
from app.core.vector_index.protocol import IndexBackend
from app.core.vector_index.store import VectorStore
from app.core.vector_index.tuning import (
    EF_SEARCH_CANDIDATES,
    IVF_MIN_TRAIN,
    IVF_TRAIN_PER_LIST,
    NPROBE_CANDIDATES,
    default_nlist,
    default_pq_m,
)

__all__ = [
    "DEFAULT_COMPRESSED_THRESHOLD",
    "DEFAULT_SEARCH_K",
    "EF_SEARCH_CANDIDATES",
    "FORMAT_VERSION",
    "IVF_K_FACTOR",
    "IVF_MAX_CANDIDATES",
    "IVF_MIN_CANDIDATES",
    "IVF_MIN_TRAIN",
    "IVF_TRAIN_PER_LIST",
    "NPROBE_CANDIDATES",
    "SIDECAR",
    "ClipIndex",
    "ExactBackend",
    "HnswBackend",
    "IndexBackend",
    "IndexLoadError",
    "IndexMeta",
    "IndexMismatchError",
    "IndexNotFoundError",
    "IndexPolicy",
    "IvfPqBackend",
    "IvfPqParams",
    "VectorStore",
    "default_nlist",
    "default_pq_m",
]
