"""The on-disk form of an index, and the only code that touches it.

A directory holds ``clips-<token>.faiss`` (and for IVF-PQ ``vectors-<token>.npy`` and
``vector-ids-<token>.npy``) plus ``index.json`` naming them. Each file is written under a fresh
token through :func:`app.core.files.atomic_path` and the sidecar is replaced last, so a reader
always sees a matching set; files of earlier saves are removed afterwards (a reader that mapped one
keeps its inode).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict
from pathlib import Path

import faiss
import numpy as np

from app.core.files import atomic_path, atomic_write
from app.core.vector_index.exact import ExactBackend
from app.core.vector_index.hnsw import HnswBackend
from app.core.vector_index.ivfpq import IvfPqBackend
from app.core.vector_index.meta import IndexLoadError, IndexMeta, IndexMismatchError, IndexNotFoundError
from app.core.vector_index.protocol import IndexBackend
from app.core.vector_index.store import VectorStore

SIDECAR = "index.json"
_DATA_FILES = ("clips-*.faiss", "vectors-*.npy", "vector-ids-*.npy")
_TEMPORARIES = (".clips-*.faiss.tmp", ".vectors-*.npy.tmp", ".vector-ids-*.npy.tmp")
_REBUILD = "run `photoscore index --rebuild`"


def save_index(directory: Path, backend: IndexBackend, meta: IndexMeta) -> Path:
    """Write the FAISS file (and vector store) under a fresh token, then the sidecar naming them;
    records the names, count and tombstones in ``meta``. Returns the FAISS file's path."""
    token = secrets.token_hex(6)
    name = f"clips-{token}.faiss"
    with atomic_path(directory / name, tmp=directory / f".{name}.tmp", sync_dir=False) as tmp:
        faiss.write_index(backend.index, str(tmp))
    if backend.store is not None:
        meta.vector_ids_file, meta.vectors_file = save_vectors(backend.store, directory, token)
    meta.file = name
    meta.count = backend.count
    meta.removed_ids = sorted(backend.removed)
    with atomic_write(directory / SIDECAR, "w") as fh:  # then fsyncs the directory: all renames durable
        fh.write(json.dumps(asdict(meta), indent=1))
    return directory / name


def remove_stale(directory: Path, meta: IndexMeta) -> None:
    """Delete data files ``meta`` does not name and temporaries a crashed save left behind."""
    keep = {meta.file, meta.vectors_file, meta.vector_ids_file}
    for pattern in _DATA_FILES:
        for old in directory.glob(pattern):
            if old.name not in keep:
                old.unlink(missing_ok=True)  # readers that mapped it keep the inode
    for pattern in _TEMPORARIES:
        for stale in directory.glob(pattern):
            stale.unlink(missing_ok=True)


def save_vectors(store: VectorStore, directory: Path, token: str) -> tuple[str, str]:
    """Write ``vector-ids-<token>.npy`` and ``vectors-<token>.npy`` (unless unchanged there)."""
    if store.files is not None and all((directory / f).is_file() for f in store.files):
        return store.files
    ids = store.ids()
    ids_name, vecs_name = f"vector-ids-{token}.npy", f"vectors-{token}.npy"
    with atomic_write(directory / ids_name, tmp=directory / f".{ids_name}.tmp", sync_dir=False) as fh:
        np.save(fh, ids)
    with atomic_path(directory / vecs_name, tmp=directory / f".{vecs_name}.tmp", sync_dir=False) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(ids), store.dim))
        step = 1 << 18
        for lo in range(0, len(ids), step):
            out[lo : lo + step] = store.get(ids[lo : lo + step])
        out.flush()
        del out
    store.files = (ids_name, vecs_name)
    return store.files


def load_vectors(directory: Path, ids_name: str, vecs_name: str, dim: int) -> VectorStore:
    """A store memory-mapping the two files; ValueError when they do not fit together."""
    ids = np.load(directory / ids_name, mmap_mode="r")
    vecs = np.load(directory / vecs_name, mmap_mode="r")
    if vecs.ndim != 2 or vecs.shape != (len(ids), dim) or vecs.dtype != np.float32:
        raise ValueError(f"vector store {vecs_name} has shape {vecs.shape} {vecs.dtype}, expected ({len(ids)}, {dim})")
    store = VectorStore(dim, ids, vecs)
    store.files = (ids_name, vecs_name)
    return store


def read_meta(directory: str | Path) -> IndexMeta:
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
        raise IndexLoadError(f"unreadable index metadata {path}: {exc}; {_REBUILD}") from exc


def check_checkpoint(directory: str | Path, meta: IndexMeta, expected_checkpoint_hash: str | None) -> None:
    """:class:`IndexMismatchError` when the index belongs to another checkpoint."""
    if expected_checkpoint_hash is not None and meta.checkpoint_hash != expected_checkpoint_hash:
        raise IndexMismatchError(
            f"the index in {directory} was built with checkpoint {meta.checkpoint_hash[:12]} "
            f"but the model's checkpoint is {expected_checkpoint_hash[:12]}; their embeddings "
            "are not comparable. Rebuild the index for this model with "
            "`photoscore index --rebuild` (after re-indexing the music with this checkpoint), "
            "or serve the checkpoint the index was built with."
        )


def load_backend(directory: str | Path, meta: IndexMeta) -> IndexBackend:
    """Open the files ``meta`` names as the index type it records; IndexLoadError (or
    IndexMismatchError for a dimension) when they are missing, unreadable or disagree.
    (Messages name ``directory`` as the caller gave it.)"""
    path = Path(directory) / meta.file
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as exc:
        raise IndexLoadError(f"cannot read index file {path}: {str(exc).splitlines()[0]}; {_REBUILD}") from exc
    if index.d != meta.dim:
        raise IndexMismatchError(f"index file {path} has dimension {index.d}, sidecar {meta.dim}")
    removed = {int(i) for i in meta.removed_ids}
    backend: IndexBackend
    if meta.index_type == IvfPqBackend.kind:
        try:
            store = load_vectors(Path(directory), meta.vector_ids_file, meta.vectors_file, meta.dim)
        except (OSError, ValueError) as exc:
            raise IndexLoadError(f"cannot read the IVF-PQ vector store in {directory}: {exc}; {_REBUILD}") from exc
        if len(store) != index.ntotal:
            raise IndexLoadError(
                f"index file {path} holds {index.ntotal} vectors but its vector store {len(store)}; {_REBUILD}"
            )
        backend = IvfPqBackend(index, store, removed)
    else:
        kinds = {ExactBackend.kind: ExactBackend, HnswBackend.kind: HnswBackend}
        if meta.index_type not in kinds:
            raise IndexLoadError(f"index in {directory} has unknown type {meta.index_type!r}; {_REBUILD}")
        if not isinstance(index, faiss.IndexIDMap2):
            index = faiss.downcast_index(index)
        backend = kinds[meta.index_type](index, removed)
    if backend.count != meta.count:
        raise IndexLoadError(
            f"index file {path} holds {backend.count} vectors but its sidecar says {meta.count}; {_REBUILD}"
        )
    return backend
