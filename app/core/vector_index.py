"""FAISS index over clip embeddings; ids are catalogue clip ids, never row positions.

Vectors are L2-normalised, so inner product ranks like cosine similarity. Small catalogues use
exact search (``IndexFlatIP``); large ones HNSW with ``efSearch`` tuned on a sample until recall@10
against exact search reaches a target. HNSW cannot delete, so removed ids become tombstones that
searches exclude with an ``IDSelector`` (rebuild when they pile up).

Very large catalogues use IVF-PQ (``ivfpq``): product-quantised codes (``M`` bytes + an 8-byte id
per clip in RAM) trained on a sample of the stored embeddings, searched for a few times more
candidates than asked, which are then re-scored exactly against the float32 vectors in a
memory-mapped :class:`VectorStore` beside the index (on disk, not in RAM). ``reconstruct`` reads
that store, so reranking downstream sees the true embeddings. ``nprobe`` is tuned like
``efSearch``: the smallest value whose recall@10 against exact search, at the service's K,
reaches the target.

On disk, a directory holds ``clips-<token>.faiss`` (and for IVF-PQ ``vectors-<token>.npy`` and
``vector-ids-<token>.npy``) plus ``index.json`` naming them; the JSON is replaced last (temp
file, fsync, ``os.replace``), so readers always see a matching set.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import secrets
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np

from app.core.files import fsync_dir, fsync_file

if TYPE_CHECKING:
    from app.core.settings import Settings

SIDECAR = "index.json"
FORMAT_VERSION = 1
EF_SEARCH_CANDIDATES = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
NPROBE_CANDIDATES = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
DEFAULT_COMPRESSED_THRESHOLD = 2_000_000  # clips from which IVF-PQ replaces HNSW (settings)
DEFAULT_SEARCH_K = 256  # the service's FAISS candidates (settings.search_k): recall is tuned there
IVF_K_FACTOR = 4  # PQ candidates per wanted result, re-scored exactly
IVF_MIN_CANDIDATES = 256  # never re-score fewer than this
IVF_MAX_CANDIDATES = 65_536
IVF_TRAIN_PER_LIST = 64  # training sample per inverted list
IVF_MIN_TRAIN = 65_536


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
    """What the sidecar records about an index."""

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


class VectorStore:
    """Exact float32 vectors by clip id, for IVF-PQ re-scoring and ``reconstruct``.

    A base (sorted ids + rows; memory-mapped ``.npy`` files once saved or loaded) plus a small
    in-memory overlay of vectors added since, and the base ids removed since. ``save`` writes a
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
            base = base[~_isin_sorted(base, self._dead)]
        return np.union1d(base, self._extra_ids) if len(self._extra_ids) else np.array(base, np.int64)

    def contains(self, ids: np.ndarray) -> np.ndarray:
        in_base = _isin_sorted(ids, self._ids) & ~_isin_sorted(ids, self._dead)
        return in_base | _isin_sorted(ids, self._extra_ids)

    def get(self, ids: np.ndarray) -> np.ndarray:
        """Rows for ``ids`` (any order); KeyError for an id not held."""
        ids = _as_ids(ids)
        out = np.empty((len(ids), self.dim), np.float32)
        if not len(ids):
            return out
        pos = np.clip(np.searchsorted(self._ids, ids), 0, max(len(self._ids) - 1, 0))
        in_base = (
            (self._ids[pos] == ids) & ~_isin_sorted(ids, self._dead) if len(self._ids) else np.zeros(len(ids), bool)
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
        ids = np.unique(_as_ids(ids))
        if len(self._extra_ids):
            keep = ~_isin_sorted(self._extra_ids, ids)
            self._extra_ids, self._extra_vecs = self._extra_ids[keep], self._extra_vecs[keep]
        base_hit = ids[_isin_sorted(ids, self._ids)]
        if len(base_hit):
            self._dead = np.union1d(self._dead, base_hit)
        self.files = None

    def chunks(self, size: int = 1 << 18) -> Any:
        """Live ``(ids, vectors)`` in chunks of the base, then the overlay (exact search)."""
        for lo in range(0, len(self._ids), size):
            ids = np.asarray(self._ids[lo : lo + size])
            vecs = np.asarray(self._vecs[lo : lo + size], np.float32)
            if len(self._dead):
                keep = ~_isin_sorted(ids, self._dead)
                ids, vecs = ids[keep], vecs[keep]
            yield ids, vecs
        if len(self._extra_ids):
            yield self._extra_ids, self._extra_vecs

    def save(self, directory: Path, token: str) -> tuple[str, str]:
        """Write ``vector-ids-<token>.npy`` and ``vectors-<token>.npy`` (unless unchanged there)."""
        if self.files is not None and all((directory / f).is_file() for f in self.files):
            return self.files
        ids = self.ids()
        ids_name, vecs_name = f"vector-ids-{token}.npy", f"vectors-{token}.npy"
        tmp_ids, tmp_vecs = directory / f".{ids_name}.tmp", directory / f".{vecs_name}.tmp"
        with open(tmp_ids, "wb") as fh:
            np.save(fh, ids)
        out = np.lib.format.open_memmap(tmp_vecs, mode="w+", dtype=np.float32, shape=(len(ids), self.dim))
        step = 1 << 18
        for lo in range(0, len(ids), step):
            out[lo : lo + step] = self.get(ids[lo : lo + step])
        out.flush()
        del out
        for tmp, name in ((tmp_ids, ids_name), (tmp_vecs, vecs_name)):
            fsync_file(tmp)
            os.replace(tmp, directory / name)
        self.files = (ids_name, vecs_name)
        return self.files

    @classmethod
    def load(cls, directory: Path, ids_name: str, vecs_name: str, dim: int) -> VectorStore:
        ids = np.load(directory / ids_name, mmap_mode="r")
        vecs = np.load(directory / vecs_name, mmap_mode="r")
        if vecs.ndim != 2 or vecs.shape != (len(ids), dim) or vecs.dtype != np.float32:
            raise ValueError(
                f"vector store {vecs_name} has shape {vecs.shape} {vecs.dtype}, expected ({len(ids)}, {dim})"
            )
        store = cls(dim, ids, vecs)
        store.files = (ids_name, vecs_name)
        return store


class ClipIndex:
    """A thread-safe FAISS index of clip embeddings keyed by clip id, with its metadata.

    Exact and HNSW wrap the FAISS index in ``IndexIDMap2``; IVF-PQ keeps the ids in its inverted
    lists (an ``IDMap2`` reverse map would cost more RAM per clip than the codes) and holds the
    float vectors in a :class:`VectorStore`.
    """

    def __init__(self, index: faiss.Index, meta: IndexMeta, store: VectorStore | None = None) -> None:
        # Any: FAISS's stubs declare the base Index, not the wrappers' id_map / index / hnsw members.
        self._index: Any = index
        self.meta = meta
        self._removed: set[int] = {int(i) for i in meta.removed_ids}
        self._lock: threading.Lock | contextlib.nullcontext[None] = threading.Lock()
        self._store = store
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
        ids = _as_ids(ids)
        embeddings = _as_vectors(embeddings, dim)
        d = int(embeddings.shape[1]) if embeddings.shape[1] else int(dim or 0)
        if d <= 0:
            raise ValueError("cannot infer the dimension of an empty index; pass dim=")
        if len(ids) != len(embeddings):
            raise ValueError(f"{len(ids)} ids for {len(embeddings)} embeddings")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("duplicate clip ids")
        kind = index_type
        if kind == "auto":
            kind = policy.index_type(len(ids))
        params: dict[str, Any] = {"exact_threshold": int(policy.exact_threshold)}
        if kind == "ivfpq":
            return cls._build_ivfpq(
                ids,
                embeddings,
                checkpoint_hash=checkpoint_hash,
                dim=d,
                params={**params, "compressed_threshold": int(policy.compressed_threshold)},
                search_k=policy.search_k,
                nlist=nlist,
                pq_m=pq_m,
                nprobe=nprobe,
                target_recall=target_recall,
                recall_sample=recall_sample,
                last_event_id=last_event_id,
                seed=seed,
            )
        if kind == "flat":
            inner: faiss.Index = faiss.IndexFlatIP(d)
        elif kind == "hnsw":
            inner = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = ef_construction
            params.update(M=hnsw_m, efConstruction=ef_construction)
        else:
            raise ValueError(f"unknown index type {index_type!r} (auto, flat, hnsw or ivfpq)")
        index = faiss.IndexIDMap2(inner)
        if len(ids):
            index.add_with_ids(embeddings, ids)
        meta = IndexMeta(
            checkpoint_hash=checkpoint_hash,
            dim=d,
            count=len(ids),
            index_type=kind,
            params=params,
            last_event_id=int(last_event_id),
            built_at=_now(),
        )
        built = cls(index, meta)
        if kind == "hnsw":
            if ef_search is None:
                built.tune_ef_search(target_recall, sample=recall_sample, seed=seed)
            else:
                params["efSearch"] = int(ef_search)
                built.meta.recall_at_10 = built.recall_at_k(recall_sample, k=10, seed=seed)
        return built

    @classmethod
    def _build_ivfpq(
        cls,
        ids: np.ndarray,
        embeddings: np.ndarray,
        *,
        checkpoint_hash: str,
        dim: int,
        params: dict[str, Any],
        search_k: int,
        nlist: int | None,
        pq_m: int | None,
        nprobe: int | None,
        target_recall: float,
        recall_sample: int,
        last_event_id: int,
        seed: int,
    ) -> ClipIndex:
        """Train on a sample, add everything, keep the float vectors aside for re-scoring.

        L2 on unit vectors ranks like inner product and lets FAISS use precomputed PQ tables;
        re-scoring is by exact inner product.
        """
        n = len(ids)
        nlist = int(nlist or default_nlist(n))
        m = int(pq_m or default_pq_m(dim))
        if dim % m:
            raise ValueError(f"pq_m={m} must divide the dimension {dim}")
        train_n = min(n, max(IVF_MIN_TRAIN, IVF_TRAIN_PER_LIST * nlist))
        if train_n < max(nlist, 256):
            raise ValueError(f"IVF-PQ needs at least {max(nlist, 256)} vectors to train, got {n}")
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(n, size=train_n, replace=False)) if train_n < n else np.arange(n)
        sample = np.ascontiguousarray(embeddings[pick], np.float32)
        quantizer = faiss.IndexFlatL2(dim)
        inner = faiss.IndexIVFPQ(quantizer, dim, nlist, m, 8)
        inner.cp.seed = seed
        inner.cp.niter = 10
        inner.pq.cp.niter = 15
        inner.pq.cp.max_points_per_centroid = 64  # 16k points per sub-quantiser is plenty for 256 codes
        inner.train(sample)
        del sample
        inner.use_precomputed_table = 1
        inner.precompute_table()
        step = 1 << 18
        for lo in range(0, n, step):
            inner.add_with_ids(np.ascontiguousarray(embeddings[lo : lo + step], np.float32), ids[lo : lo + step])
        params.update(
            nlist=nlist,
            M=m,
            nbits=8,
            trained_on=int(train_n),
            trained_count=int(n),
            k_factor=IVF_K_FACTOR,
            min_candidates=IVF_MIN_CANDIDATES,
            search_k=int(search_k),
        )
        meta = IndexMeta(
            checkpoint_hash=checkpoint_hash,
            dim=dim,
            count=n,
            index_type="ivfpq",
            params=params,
            last_event_id=int(last_event_id),
            built_at=_now(),
        )
        store = VectorStore.from_arrays(ids, embeddings)
        built = cls(inner, meta, store)
        if nprobe is None:
            built.tune_nprobe(target_recall, sample=recall_sample, seed=seed)
        else:
            params["nprobe"] = int(nprobe)
            built.meta.recall_at_10 = built.recall_at_k(recall_sample, k=10, seed=seed)
        return built

    def tune_nprobe(self, target_recall: float = 0.95, *, sample: int = 200, seed: int = 0) -> int:
        """Pick ``nprobe``: twice the smallest value whose recall@10 at the service's K reaches the target.

        The sample mixes stored vectors nudged off their point with normalised sums of eight
        random stored vectors (a direction the catalogue spans but no clip sits on, like a photo
        that suits no song in particular); the factor two is headroom for queries farther from
        the catalogue still.
        """
        if self.meta.index_type != "ivfpq":
            raise ValueError("only IVF-PQ has nprobe")
        query_ids, queries = self._sample_queries(sample, seed)
        self.meta.params["target_recall"] = target_recall
        nlist = int(self.meta.params["nlist"])
        if not len(queries):
            self.meta.params["nprobe"] = min(16, nlist)
            self.meta.recall_at_10 = None
            return self.meta.params["nprobe"]
        assert self._store is not None
        rng = np.random.default_rng(seed + 1)
        live = self._store.ids()
        parts = self._store.get(live[rng.integers(0, len(live), size=len(queries) * 8)])
        mixed = parts.reshape(len(queries), 8, self.dim).sum(axis=1)
        mixed /= np.maximum(np.linalg.norm(mixed, axis=1, keepdims=True), 1e-12)
        queries = np.ascontiguousarray(np.concatenate([queries, mixed]), np.float32)
        query_ids = np.concatenate([query_ids, np.full(len(mixed), -1, np.int64)])
        exact = self._exact_ids(queries, 11)
        k = max(11, int(self.meta.params.get("search_k", DEFAULT_SEARCH_K)))
        candidates = [c for c in NPROBE_CANDIDATES if c < nlist] + [nlist]
        chosen = candidates[-1]
        for nprobe in candidates:
            self.meta.params["nprobe"] = nprobe
            if _recall(self.search(queries, k)[1][:, :11], exact, query_ids, 10) >= target_recall:
                chosen = nprobe
                break
        self.meta.params["nprobe"] = min(2 * chosen, nlist)
        self.meta.recall_at_10 = _recall(self.search(queries, k)[1][:, :11], exact, query_ids, 10)
        return self.meta.params["nprobe"]

    def tune_ef_search(self, target_recall: float = 0.95, *, sample: int = 200, seed: int = 0) -> int:
        """Pick the smallest ``efSearch`` reaching ``target_recall`` at k=10; records it."""
        if self.meta.index_type != "hnsw":
            raise ValueError("only HNSW has efSearch")
        query_ids, queries = self._sample_queries(sample, seed)
        self.meta.params["target_recall"] = target_recall
        if not len(queries):  # nothing to measure on yet
            self.meta.params["efSearch"] = 64
            self.meta.recall_at_10 = None
            return 64
        exact = self._exact_ids(queries, 11)
        chosen, recall = EF_SEARCH_CANDIDATES[-1], 0.0
        for ef in EF_SEARCH_CANDIDATES:
            self.meta.params["efSearch"] = ef
            recall = _recall(self.search(queries, 11)[1], exact, query_ids, 10)
            if recall >= target_recall:
                chosen = ef
                break
        self.meta.params["efSearch"] = chosen
        self.meta.recall_at_10 = recall
        return chosen

    # ------------------------------------------------------------------------------- properties
    @property
    def dim(self) -> int:
        return self.meta.dim

    @property
    def count(self) -> int:
        """Live vectors (tombstoned HNSW entries excluded)."""
        return int(self._index.ntotal) - len(self._removed)

    @property
    def store(self) -> VectorStore | None:
        """IVF-PQ's exact vectors (None for the other types, which hold them in FAISS)."""
        return self._store

    @property
    def checkpoint_hash(self) -> str:
        return self.meta.checkpoint_hash

    @property
    def index_type(self) -> str:
        return self.meta.index_type

    @property
    def tombstones(self) -> int:
        return len(self._removed)

    def __len__(self) -> int:
        return self.count

    def ids(self) -> np.ndarray:
        """Sorted live clip ids."""
        with self._lock:
            if self._store is not None:
                return self._store.ids()
            all_ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
            removed = np.fromiter(self._removed, np.int64, len(self._removed))
        return np.sort(np.setdiff1d(all_ids, removed, assume_unique=True))

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
            twin = ClipIndex(
                faiss.clone_index(self._index),
                copy.deepcopy(self.meta),
                None if self._store is None else self._store.copy(),
            )
            twin._removed = set(self._removed)
        return twin

    def _writable(self) -> None:
        if self.frozen:
            raise RuntimeError("this index is frozen (shared by readers); change a thawed_copy()")

    # --------------------------------------------------------------------------------- mutation
    def add(self, ids: np.ndarray, embeddings: np.ndarray) -> None:
        """Add vectors; raises on an id already present (clip ids are never reused)."""
        self._writable()
        ids = _as_ids(ids)
        embeddings = _as_vectors(embeddings, self.dim)
        if len(ids) != len(embeddings):
            raise ValueError(f"{len(ids)} ids for {len(embeddings)} embeddings")
        if not len(ids):
            return
        with self._lock:
            if self._store is not None:
                clash = ids[self._store.contains(ids)]
            else:
                clash = np.intersect1d(ids, faiss.vector_to_array(self._index.id_map))
            if len(clash) or len(np.unique(ids)) != len(ids):
                raise ValueError(f"clip ids already in the index: {clash[:5].tolist()}")
            self._index.add_with_ids(embeddings, ids)
            if self._store is not None:
                self._store.add(ids, embeddings)
            self.meta.count = self.count

    def remove(self, ids: np.ndarray) -> int:
        """Remove clip ids (unknown ids are ignored); returns how many were live."""
        self._writable()
        ids = _as_ids(ids)
        if not len(ids):
            return 0
        with self._lock:
            if self._store is not None:
                live = np.unique(ids[self._store.contains(ids)])
                if not len(live):
                    return 0
                self._index.remove_ids(faiss.IDSelectorBatch(live))
                self._store.remove(live)
                self.meta.count = self.count
                return len(live)
            present = faiss.vector_to_array(self._index.id_map)
            live = np.setdiff1d(np.intersect1d(ids, present), list(self._removed) or [-1])
            if not len(live):
                return 0
            if self.meta.index_type == "flat":
                self._index.remove_ids(faiss.IDSelectorBatch(live))
            else:
                self._removed.update(int(i) for i in live)
            self.meta.count = self.count
            return len(live)

    def set_last_event_id(self, event_id: int) -> None:
        self.meta.last_event_id = int(event_id)

    # ----------------------------------------------------------------------------------- search
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` inner products and clip ids per query; missing slots are -1 (score -inf)."""
        queries = _as_vectors(np.atleast_2d(queries), self.dim)
        k = int(k)
        n = len(queries)
        if n == 0 or k <= 0 or self._index.ntotal == 0:
            return np.full((n, max(k, 0)), -np.inf, np.float32), np.full((n, max(k, 0)), -1, np.int64)
        if self._store is not None:
            return self._search_refined(queries, k)
        with self._lock:
            params = self._search_params(k)
            scores, ids = self._index.search(queries, k, params=params)
        scores = scores.astype(np.float32)
        scores[ids < 0] = -np.inf
        return scores, ids.astype(np.int64)

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors for clip ids (for reranking); KeyError for an id not in the index."""
        ids = _as_ids(ids)
        if not len(ids):
            return np.empty((0, self.dim), np.float32)
        with self._lock:
            if self._store is not None:
                return self._store.get(ids)
            dead = [int(i) for i in ids if int(i) in self._removed]
            if dead:
                raise KeyError(f"clip ids not in the index: {dead[:5]}")
            try:
                return np.asarray(self._index.reconstruct_batch(ids), np.float32).reshape(-1, self.dim)
            except RuntimeError as exc:
                present = faiss.vector_to_array(self._index.id_map)
                missing = np.setdiff1d(ids, present)[:5].tolist()
                raise KeyError(f"clip ids not in the index: {missing}") from exc

    def recall_at_k(self, sample: int | np.ndarray = 200, k: int = 10, seed: int = 0) -> float:
        """Mean overlap of this index's top-``k`` with exact search's (1.0 for flat).

        ``sample`` is a number of stored vectors drawn as queries, nudged off the stored point and
        with their own id left out of both lists (finding itself would flatter the index), or
        explicit query vectors.
        """
        if isinstance(sample, np.ndarray):
            queries = _as_vectors(np.atleast_2d(sample), self.dim)
            query_ids = np.full(len(queries), -1, np.int64)
        else:
            query_ids, queries = self._sample_queries(int(sample), seed)
        if not len(queries):
            return 1.0
        if self._store is not None:  # IVF-PQ: measured as the service searches (K candidates)
            wide = max(k + 1, int(self.meta.params.get("search_k", DEFAULT_SEARCH_K)))
            found = self.search(queries, wide)[1][:, : k + 1]
        else:
            found = self.search(queries, k + 1)[1]
        return _recall(found, self._exact_ids(queries, k + 1), query_ids, k)

    # ------------------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """Write atomically: the FAISS file under a fresh name, then the sidecar naming it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            token = secrets.token_hex(6)
            name = f"clips-{token}.faiss"
            tmp = directory / f".{name}.tmp"
            faiss.write_index(self._index, str(tmp))
            fsync_file(tmp)
            os.replace(tmp, directory / name)
            if self._store is not None:
                self.meta.vector_ids_file, self.meta.vectors_file = self._store.save(directory, token)
            self.meta.file = name
            self.meta.count = self.count
            self.meta.removed_ids = sorted(self._removed)
            _atomic_write_text(directory / SIDECAR, json.dumps(asdict(self.meta), indent=1))
            fsync_dir(directory)
        keep = {name, self.meta.vectors_file, self.meta.vector_ids_file}
        for pattern in ("clips-*.faiss", "vectors-*.npy", "vector-ids-*.npy"):
            for old in directory.glob(pattern):
                if old.name not in keep:
                    old.unlink(missing_ok=True)  # readers that mapped it keep the inode
        for pattern in (".clips-*.faiss.tmp", ".vectors-*.npy.tmp", ".vector-ids-*.npy.tmp"):
            for stale in directory.glob(pattern):
                stale.unlink(missing_ok=True)
        return directory / name

    @classmethod
    def read_meta(cls, directory: str | Path) -> IndexMeta:
        """The sidecar alone (cheap): for staleness and checkpoint checks before loading."""
        path = Path(directory) / SIDECAR
        if not path.is_file():
            raise IndexNotFoundError(
                f"no index in {directory}: build one with `photoscore index PATH` or `photoscore index --rebuild`"
            )
        try:
            raw = json.loads(path.read_text())
            known = {k: v for k, v in raw.items() if k in IndexMeta.__dataclass_fields__}
            return IndexMeta(**known)
        except (ValueError, TypeError) as exc:
            raise IndexLoadError(f"unreadable index metadata {path}: {exc}; run `photoscore index --rebuild`") from exc

    @classmethod
    def load(cls, directory: str | Path, expected_checkpoint_hash: str | None = None) -> ClipIndex:
        """Load an index; :class:`IndexMismatchError` when it belongs to another checkpoint."""
        meta = cls.read_meta(directory)
        if expected_checkpoint_hash is not None and meta.checkpoint_hash != expected_checkpoint_hash:
            raise IndexMismatchError(
                f"the index in {directory} was built with checkpoint {meta.checkpoint_hash[:12]} "
                f"but the model's checkpoint is {expected_checkpoint_hash[:12]}; their embeddings "
                "are not comparable. Rebuild the index for this model with "
                "`photoscore index --rebuild` (after re-indexing the music with this checkpoint), "
                "or serve the checkpoint the index was built with."
            )
        path = Path(directory) / meta.file
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise IndexLoadError(
                f"cannot read index file {path}: {str(exc).splitlines()[0]}; run `photoscore index --rebuild`"
            ) from exc
        if index.d != meta.dim:
            raise IndexMismatchError(f"index file {path} has dimension {index.d}, sidecar {meta.dim}")
        store = None
        if meta.index_type == "ivfpq":
            try:
                store = VectorStore.load(Path(directory), meta.vector_ids_file, meta.vectors_file, meta.dim)
            except (OSError, ValueError) as exc:
                raise IndexLoadError(
                    f"cannot read the IVF-PQ vector store in {directory}: {exc}; run `photoscore index --rebuild`"
                ) from exc
            if len(store) != index.ntotal:
                raise IndexLoadError(
                    f"index file {path} holds {index.ntotal} vectors but its vector store {len(store)}; "
                    "run `photoscore index --rebuild`"
                )
        elif not isinstance(index, faiss.IndexIDMap2):
            index = faiss.downcast_index(index)
        loaded = cls(index, meta, store)
        if loaded.count != meta.count:
            raise IndexLoadError(
                f"index file {path} holds {loaded.count} vectors but its sidecar says {meta.count}; "
                "run `photoscore index --rebuild`"
            )
        return loaded

    # ---------------------------------------------------------------------------------- helpers
    def _search_params(self, k: int) -> faiss.SearchParameters | None:
        selector = (
            faiss.IDSelectorNot(faiss.IDSelectorBatch(np.fromiter(self._removed, np.int64))) if self._removed else None
        )
        if self.meta.index_type == "hnsw":
            ef = max(int(self.meta.params.get("efSearch", 64)), k)
            params: Any = faiss.SearchParametersHNSW(efSearch=ef)  # type: ignore[attr-defined]  # not in the stubs
            if selector is not None:
                params.sel = selector
                params._keep = selector  # the SWIG object must outlive the search call
            return params
        if selector is not None:
            params = faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]  # SWIG keyword init
            params._keep = selector
            return params
        return None

    def _search_refined(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """IVF-PQ candidates, re-scored by exact inner product with the stored float vectors."""
        assert self._store is not None
        n = len(queries)
        p = self.meta.params
        c = int(min(max(k * int(p.get("k_factor", IVF_K_FACTOR)), int(p.get("min_candidates", 0))), IVF_MAX_CANDIDATES))
        c = max(k, min(c, int(self._index.ntotal)))
        with self._lock:
            params = faiss.SearchParametersIVF(nprobe=int(p.get("nprobe", 16)))  # type: ignore[call-arg]
            _, cand = self._index.search(queries, c, params=params)
            flat = cand[cand >= 0]
            uniq, inverse = np.unique(flat, return_inverse=True)
            vecs = self._store.get(uniq) if len(uniq) else np.zeros((0, self.dim), np.float32)
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

    def _live_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """All (ids, vectors) in storage order, tombstones excluded (for exact search)."""
        with self._lock:
            ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
            inner = faiss.downcast_index(self._index.index)
            storage = faiss.downcast_index(inner.storage) if hasattr(inner, "storage") else inner
            vectors = storage.reconstruct_n(0, storage.ntotal).reshape(-1, self.dim)
        if self._removed:
            keep = ~np.isin(ids, np.fromiter(self._removed, np.int64))
            ids, vectors = ids[keep], vectors[keep]
        return ids, np.ascontiguousarray(vectors, np.float32)

    def _exact_ids(self, queries: np.ndarray, k: int) -> np.ndarray:
        if self._store is not None:
            return _exact_ids_chunked(self._store, queries, k)
        ids, vectors = self._live_vectors()
        if not len(ids):
            return np.full((len(queries), k), -1, np.int64)
        _, positions = faiss.knn(queries, vectors, min(k, len(ids)), metric=faiss.METRIC_INNER_PRODUCT)
        out = np.full((len(queries), k), -1, np.int64)
        out[:, : positions.shape[1]] = np.where(positions >= 0, ids[positions], -1)
        return out

    def _sample_queries(self, sample: int, seed: int, jitter: bool = True) -> tuple[np.ndarray, np.ndarray]:
        if self._store is not None:  # never copy every vector of a big index
            ids, vectors = self._store.ids(), None
        else:
            ids, vectors = self._live_vectors()
        if not len(ids) or sample <= 0:
            return np.empty(0, np.int64), np.empty((0, self.dim), np.float32)
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(len(ids), size=min(sample, len(ids)), replace=False))
        queries = vectors[pick] if vectors is not None else self._store.get(ids[pick])  # type: ignore[union-attr]
        if jitter:
            # Real queries (photos) are near clips, not on them; a stored vector is a node of the
            # HNSW graph and finds its neighbours too easily. Nudge each to cosine ~0.8.
            noise = rng.standard_normal(queries.shape).astype(np.float32)
            noise *= 0.75 / np.linalg.norm(noise, axis=1, keepdims=True)
            queries = queries + noise
            queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        return ids[pick], np.ascontiguousarray(queries, np.float32)


def default_nlist(n: int) -> int:
    """About sqrt(n) inverted lists, a power of two (~2,400 clips per list at 10^7)."""
    return int(min(65_536, max(16, 2 ** round(np.log2(max(np.sqrt(max(n, 1)), 1.0))))))


def default_pq_m(dim: int) -> int:
    """Sub-quantisers: 8 dimensions each (one byte per 8 floats), at most 64, dividing ``dim``.

    With exact re-scoring of 4 x K candidates, recall is set by ``nprobe``, not by code size: on
    synthetic catalogues 8 and 4 dimensions per byte gave the same recall@10.
    """
    for m in range(min(64, max(dim // 8, 1)), 0, -1):
        if dim % m == 0:
            return m
    return 1


def _exact_ids_chunked(store: VectorStore, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-``k`` ids over a store too big to copy: per chunk, then merged."""
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.full((len(queries), 0), -1, np.int64)
    for ids, vecs in store.chunks():
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


def _isin_sorted(values: np.ndarray, sorted_ref: np.ndarray) -> np.ndarray:
    """``np.isin`` against a sorted array (a memory map is searched, never copied)."""
    values = np.asarray(values, np.int64)
    if not len(sorted_ref) or not len(values):
        return np.zeros(len(values), bool)
    pos = np.clip(np.searchsorted(sorted_ref, values), 0, len(sorted_ref) - 1)
    return np.asarray(sorted_ref[pos] == values)


def _recall(found: np.ndarray, exact: np.ndarray, query_ids: np.ndarray, k: int) -> float:
    """Mean |approx top-k ∩ exact top-k| / |exact top-k|, each query's own id removed first."""
    hits, total = 0, 0
    for row_found, row_exact, own in zip(found, exact, query_ids, strict=True):
        truth = [i for i in row_exact.tolist() if i >= 0 and i != own][:k]
        got = [i for i in row_found.tolist() if i >= 0 and i != own][:k]
        hits += len(set(truth) & set(got))
        total += len(truth)
    return hits / total if total else 1.0


def _as_ids(ids: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))


def _as_vectors(vectors: Any, dim: int | None) -> np.ndarray:
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.size == 0:
        return np.empty((0, dim or (arr.shape[-1] if arr.ndim == 2 else 0)), np.float32)
    if arr.ndim != 2 or (dim is not None and arr.shape[1] != dim):
        raise ValueError(f"expected vectors of shape [n, {dim or 'd'}], got {arr.shape}")
    return np.ascontiguousarray(arr)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
