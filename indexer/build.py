"""Bring the FAISS file in line with the catalogue database (the source of truth).

Run at the end of every indexing run and by ``--rebuild``. The update is a diff of clip ids
(database vs. index file), not a replay of this run's work, so a run killed at any point is
repaired by the next one: whatever the database holds, the index ends up holding, clip for clip.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from app.core.catalogue import (
    catalogue_version,
    checkpoint_counts,
    load_clip_rows,
    load_embeddings,
)
from app.core.vector_index import (
    ClipIndex,
    IndexLoadError,
    IndexMismatchError,
    IndexNotFoundError,
    IndexPolicy,
)

log = logging.getLogger(__name__)

RECALL_SAMPLE = 200
MAX_TOMBSTONE_FRACTION = 0.1  # HNSW cannot delete; rebuild once this share is dead weight
RETRAIN_GROWTH = 4.0  # IVF-PQ: retrain once the catalogue is this many times its training size


@dataclass
class IndexReport:
    """What happened to the index file, for the run summary."""

    directory: Path
    action: str  # "built", "updated" or "unchanged"
    index_type: str
    count: int
    dim: int
    params: dict[str, Any] = field(default_factory=dict)
    recall_at_10: float | None = None
    added: int = 0
    removed: int = 0
    seconds: float = 0.0
    reason: str = ""  # why a full build happened
    other_checkpoint_tracks: int = 0

    def describe(self) -> str:
        kind = {
            "flat": "exact (IndexFlatIP)",
            "hnsw": "HNSW (IndexHNSWFlat)",
            "ivfpq": "IVF-PQ (IndexIVFPQ, exact re-scoring)",
        }.get(self.index_type, self.index_type)
        shown = {k: v for k, v in self.params.items() if k in ("M", "efConstruction", "efSearch", "nlist", "nprobe")}
        extra = f" {shown}" if shown else ""
        line = (
            f"{kind}{extra}, {self.count:,} clips, dim {self.dim}; {self.action}"
            f" (+{self.added:,} / -{self.removed:,}) in {self.seconds:.1f} s"
        )
        if self.reason:
            line += f" [{self.reason}]"
        if self.index_type != "flat" and self.recall_at_10 is not None:
            at = f" at K={self.params['search_k']}" if self.index_type == "ivfpq" and "search_k" in self.params else ""
            line += f"; recall@10{at} vs exact {self.recall_at_10:.3f} on {RECALL_SAMPLE} sampled queries"
        return line


def sync_index(
    session_factory: Callable[[], Session],
    index_dir: Path,
    *,
    checkpoint_hash: str,
    dim: int,
    policy: IndexPolicy = IndexPolicy(),
    rebuild: bool = False,
) -> IndexReport:
    """Update (or fully rebuild) the index in ``index_dir`` from the catalogue; returns a report."""
    t0 = time.perf_counter()
    index_dir = Path(index_dir)
    with session_factory() as session:
        # Event id first: anything committed after it is newer than the index claims to be.
        version = catalogue_version(session, checkpoint_hash)
        db_ids = load_clip_rows(session, checkpoint_hash).ids
        others = sum(n for h, n in checkpoint_counts(session).items() if h != checkpoint_hash)
    wanted_type = policy.index_type(len(db_ids))

    existing: ClipIndex | None = None
    reason = "requested (--rebuild)" if rebuild else ""
    if not rebuild:
        try:
            existing = ClipIndex.load(index_dir, expected_checkpoint_hash=checkpoint_hash)
        except IndexNotFoundError:
            reason = "no index yet"
        except IndexMismatchError:
            old = ClipIndex.read_meta(index_dir).checkpoint_hash
            reason = f"checkpoint changed ({old[:12]} -> {checkpoint_hash[:12]})"
        except IndexLoadError as exc:
            reason = f"existing index unusable: {str(exc).split(';')[0]}"
            log.warning("rebuilding the index: %s", exc)
    if existing is not None:
        if existing.dim != dim:
            reason, existing = f"dimension changed ({existing.dim} -> {dim})", None
        elif existing.index_type != wanted_type:
            exact = "flat" in (existing.index_type, wanted_type)
            crossed = policy.exact_threshold if exact else policy.compressed_threshold
            which = "exact" if exact else "IVF-PQ"
            reason, existing = f"size crossed the {which} threshold ({crossed:,})", None
        elif existing.index_type == "ivfpq" and len(db_ids) > RETRAIN_GROWTH * int(
            existing.meta.params.get("trained_count", 0)
        ):
            reason, existing = f"catalogue grew {RETRAIN_GROWTH:g}x since IVF-PQ training", None
        elif existing.tombstones > MAX_TOMBSTONE_FRACTION * max(len(db_ids), 1):
            reason, existing = "too many deleted vectors", None

    if existing is None:
        index = _full_build(session_factory, checkpoint_hash, dim, policy, version.last_event_id)
        action, added, removed = "built", index.count, 0
    else:
        index = existing
        held = index.ids()
        stale = np.setdiff1d(held, db_ids, assume_unique=True)
        missing = np.setdiff1d(db_ids, held, assume_unique=True)
        removed = index.remove(stale) if len(stale) else 0
        added = 0
        if len(missing):
            with session_factory() as session:
                ids, embs = load_embeddings(session, missing, checkpoint_hash=checkpoint_hash, dim=dim)
            index.add(ids, embs)  # ids deleted meanwhile are simply absent
            added = len(ids)
        changed = bool(added or removed)
        if not changed and index.meta.last_event_id == version.last_event_id:
            return _report(index, index_dir, "unchanged", 0, 0, t0, reason, others)
        index.set_last_event_id(version.last_event_id)
        if index.index_type in ("hnsw", "ivfpq") and changed:
            index.meta.recall_at_10 = index.recall_at_k(RECALL_SAMPLE, k=10)
        action = "updated"
    index.save(index_dir)
    return _report(index, index_dir, action, added, removed, t0, reason, others)


def _full_build(
    session_factory: Callable[[], Session],
    checkpoint_hash: str,
    dim: int,
    policy: IndexPolicy,
    last_event_id: int,
) -> ClipIndex:
    with session_factory() as session:
        ids, embs = load_embeddings(session, checkpoint_hash=checkpoint_hash, dim=dim)
    if len(embs) and embs.shape[1] != dim:
        raise ValueError(f"catalogue embeddings have dimension {embs.shape[1]} but the checkpoint's is {dim}")
    return ClipIndex.build(
        ids,
        embs,
        checkpoint_hash=checkpoint_hash,
        policy=policy,
        dim=dim,
        recall_sample=RECALL_SAMPLE,
        last_event_id=last_event_id,
    )


def _report(
    index: ClipIndex,
    directory: Path,
    action: str,
    added: int,
    removed: int,
    t0: float,
    reason: str,
    others: int,
) -> IndexReport:
    return IndexReport(
        directory=directory,
        action=action,
        index_type=index.index_type,
        count=index.count,
        dim=index.dim,
        params=dict(index.meta.params),
        recall_at_10=index.meta.recall_at_10,
        added=added,
        removed=removed,
        seconds=time.perf_counter() - t0,
        reason=reason,
        other_checkpoint_tracks=others,
    )
