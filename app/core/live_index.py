"""Live clip index: FAISS plus the clip table, kept in step with the catalogue database.

The database is the source of truth. Each replica holds an in-memory `ClipIndex` (ids are clip
ids) and a clip table (clip id -> track id, start, end) and follows the catalogue's
`track_events` log every `index_sync_seconds`:

* Event ids come from a sequence, but PostgreSQL transactions can commit out of id order, so a
  poll re-reads an overlap window of recent ids below the cursor and skips events it has
  already applied; a rare periodic full comparison (track id + content hash) catches anything
  older still.
* Applying is idempotent "reconcile this track with the DB": present in the DB (with this
  model's checkpoint hash) and absent or different here -> (re)load its clips; gone from the DB
  -> drop it. The order in which events are seen therefore does not matter.

The ranking that reads this view lives in `app.services.recommend`; this module holds no model.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from sqlalchemy.orm import Session

from app.core.catalogue import (
    TrackInfo,
    checkpoint_counts,
    event_track_ids_after,
    last_event_id,
    load_clip_rows,
    load_clips_with_embeddings,
    track_hashes,
    track_infos,
)
from app.core.vector_index import ClipIndex, IndexMismatchError, IndexPolicy

log = logging.getLogger(__name__)

MAX_K = 65_536  # widest FAISS candidate list when tracks are few but long


class ClipTable:
    """clip id -> (track id, start, end) as sorted numpy arrays, plus track -> clip ids."""

    def __init__(self) -> None:
        self.ids = np.zeros(0, np.int64)
        self.track_ids = np.zeros(0, np.int64)
        self.starts = np.zeros(0, np.float64)
        self.ends = np.zeros(0, np.float64)
        self.by_track: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, ids: np.ndarray, track_ids: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
        if len(ids) == 0:
            return
        ids = np.asarray(ids, np.int64)
        self.remove(ids[np.isin(ids, self.ids)])
        all_ids = np.concatenate([self.ids, ids])
        order = np.argsort(all_ids, kind="stable")
        self.ids = all_ids[order]
        self.track_ids = np.concatenate([self.track_ids, np.asarray(track_ids, np.int64)])[order]
        self.starts = np.concatenate([self.starts, np.asarray(starts, np.float64)])[order]
        self.ends = np.concatenate([self.ends, np.asarray(ends, np.float64)])[order]
        tids = np.asarray(track_ids, np.int64)
        for tid in np.unique(tids):
            mine = ids[tids == tid]
            old = self.by_track.get(int(tid))
            self.by_track[int(tid)] = np.unique(mine) if old is None else np.union1d(old, mine)

    def remove(self, ids: np.ndarray) -> None:
        if len(ids) == 0 or len(self.ids) == 0:
            return
        keep = ~np.isin(self.ids, ids)
        gone_tracks = np.unique(self.track_ids[~keep])
        self.ids, self.track_ids = self.ids[keep], self.track_ids[keep]
        self.starts, self.ends = self.starts[keep], self.ends[keep]
        for tid in gone_tracks:
            left = np.setdiff1d(self.by_track.get(int(tid), np.zeros(0, np.int64)), ids)
            if len(left):
                self.by_track[int(tid)] = left
            else:
                self.by_track.pop(int(tid), None)

    def clips_of(self, track_id: int) -> np.ndarray:
        return self.by_track.get(track_id, np.zeros(0, np.int64))

    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(found mask, track ids, starts, ends) for `ids`; rows with found=False are junk."""
        ids = np.asarray(ids, np.int64)
        if len(self.ids) == 0:
            z = np.zeros(len(ids))
            return np.zeros(len(ids), bool), z.astype(np.int64), z, z
        pos = np.clip(np.searchsorted(self.ids, ids), 0, len(self.ids) - 1)
        found = self.ids[pos] == ids
        return found, self.track_ids[pos], self.starts[pos], self.ends[pos]


class LiveIndex:
    """The replica's searchable view of the catalogue (thread-safe)."""

    def __init__(
        self,
        session_factory: Callable[[], Session],
        *,
        checkpoint_hash: str,
        dim: int,
        index_dir: Path | None = None,
        policy: IndexPolicy = IndexPolicy(),
        overlap: int = 1000,
        full_resync_seconds: float = 300.0,
    ) -> None:
        self.session_factory = session_factory
        self.checkpoint_hash = checkpoint_hash
        self.dim = dim
        self.index_dir = index_dir
        self.policy = policy
        self.overlap = overlap
        self.full_resync_seconds = full_resync_seconds
        self.index: ClipIndex | None = None
        self.table = ClipTable()
        self.track_sig: dict[int, str] = {}  # track id -> content sha256
        self.track_info: dict[int, TrackInfo] = {}  # what variety, steering and ranking read, per track
        # Query-bank statistics stored after the track was loaded (the start-up backfill):
        # track id -> (content sha, mean, std). Only ever gains entries for a given content.
        self.late_bank_stats: dict[int, tuple[str, float, float]] = {}
        self._va_cache: tuple[np.ndarray, np.ndarray] | None = None  # (track ids, VA) for steering
        self.cursor = 0  # highest event id seen
        self._applied: set[int] = set()  # event ids seen inside the overlap window
        self._lock = threading.RLock()  # guards index + table + sigs
        self._reconcile_lock = threading.Lock()  # one DB-read-then-apply at a time
        self._last_full = 0.0
        self.loaded = False
        self.source = ""  # "file" or "database" after load()
        self.last_sync: float | None = None
        self.last_sync_error: str | None = None

    # -- sizes -------------------------------------------------------------------------------
    @property
    def n_tracks(self) -> int:
        return len(self.track_sig)

    @property
    def n_clips(self) -> int:
        return len(self.table)

    # -- start-up ----------------------------------------------------------------------------
    def load(self) -> str:
        """Load the FAISS file if it matches the model and the DB, else rebuild from the DB."""
        with self._reconcile_lock, self.session_factory() as session:
            cursor = last_event_id(session)  # read first: later changes arrive through sync
            info = track_infos(session, checkpoint_hash=self.checkpoint_hash)
            sigs = {t: i.sha256 for t, i in info.items()}
            counts = checkpoint_counts(session)
            stale = sum(n for h, n in counts.items() if h != self.checkpoint_hash)
            clips = load_clip_rows(session, self.checkpoint_hash)
            table = ClipTable()
            table.add(*clips)
            index = self._load_file(clips.ids)
            source = "file"
            if index is None:
                source = "database"
                index, table = self._build(session)
        if stale:
            log.warning(
                "%d catalogue tracks were embedded by another checkpoint and are not searchable "
                "with this model; re-index them (photoscore index)",
                stale,
            )
        with self._lock:
            self.index, self.table, self.track_sig = index, table, sigs
            self.track_info, self._va_cache = info, None
            self.cursor, self._applied = int(cursor), set()
            self._last_full = time.monotonic()
            self.loaded, self.source = True, source
        log.info("live index ready (from %s): %d tracks, %d clips", source, len(sigs), len(table))
        return source

    def _load_file(self, ids: np.ndarray) -> ClipIndex | None:
        if self.index_dir is None or not Path(self.index_dir).exists():
            return None
        try:
            index = ClipIndex.load(Path(self.index_dir), expected_checkpoint_hash=self.checkpoint_hash)
        except IndexMismatchError as exc:
            log.warning("index file not used: %s; rebuilding from the database", exc)
            return None
        except (OSError, ValueError, RuntimeError) as exc:
            log.warning("index file unreadable (%s); rebuilding from the database", exc)
            return None
        file_ids = np.sort(np.asarray(index.ids(), np.int64))
        if len(file_ids) != len(ids) or not np.array_equal(file_ids, ids):
            log.info(
                "index file has %d clips, the database %d for this model; rebuilding from the DB",
                len(file_ids),
                len(ids),
            )
            return None
        return index

    def _build(self, session: Session) -> tuple[ClipIndex, ClipTable]:
        """Index and table from one statement, so both describe the same snapshot."""
        rows, embs = load_clips_with_embeddings(session, dim=self.dim, checkpoint_hash=self.checkpoint_hash)
        table = ClipTable()
        table.add(*rows)
        ids = rows.ids
        index = ClipIndex.build(
            ids,
            embs,
            checkpoint_hash=self.checkpoint_hash,
            policy=self.policy,
            dim=self.dim,
        )
        return index, table

    # -- following the catalogue ---------------------------------------------------------------
    def sync_once(self) -> int:
        """Apply catalogue events committed since the last poll; returns tracks reconciled."""
        with self.session_factory() as session:
            floor = max(0, self.cursor - self.overlap)
            rows = event_track_ids_after(session, floor)
            fresh = [(eid, tid) for eid, tid in rows if eid not in self._applied]
            changed = 0
            if fresh:
                changed = self._reconcile(session, sorted({tid for _, tid in fresh}))
                self._applied.update(eid for eid, _ in fresh)
                self.cursor = max(self.cursor, max(eid for eid, _ in fresh))
            self._applied = {e for e in self._applied if e > self.cursor - self.overlap}
            if time.monotonic() - self._last_full >= self.full_resync_seconds:
                changed += self._full_compare(session)
        self.last_sync, self.last_sync_error = time.time(), None
        return changed

    def refresh_tracks(self, track_ids: Iterable[int]) -> int:
        """Reconcile specific tracks now (after this replica's own add or delete)."""
        with self.session_factory() as session:
            return self._reconcile(session, sorted(set(track_ids)))

    def _full_compare(self, session: Session) -> int:
        db = track_hashes(session, self.checkpoint_hash)
        with self._lock:
            live = dict(self.track_sig)
        differ = {t for t, s in db.items() if live.get(t) != s} | (live.keys() - db.keys())
        self._last_full = time.monotonic()
        if differ:
            log.warning("full resync found %d tracks out of step; fixing", len(differ))
            return self._reconcile(session, sorted(differ))
        return 0

    def _reconcile(self, session: Session, track_ids: list[int]) -> int:
        if not track_ids or not self.loaded:
            return 0
        with self._reconcile_lock:
            db = track_hashes(session, self.checkpoint_hash, track_ids)
            with self._lock:
                live = {t: self.track_sig.get(t) for t in track_ids}
            drop = [t for t in track_ids if live[t] is not None and live[t] != db.get(t)]
            load = [t for t in track_ids if t in db and live[t] != db[t]]
            if not drop and not load:
                return 0
            info = track_infos(session, track_ids=load)
            rows, embs = load_clips_with_embeddings(session, dim=self.dim, track_ids=load)
            ids = rows.ids
            with self._lock:
                assert self.index is not None
                for t in drop:
                    old = self.table.clips_of(t)
                    if len(old):
                        self.index.remove(old)
                        self.table.remove(old)
                    self.track_sig.pop(t, None)
                    self.track_info.pop(t, None)
                    self.late_bank_stats.pop(t, None)
                if len(ids):
                    _add_missing(self.index, ids, embs)
                    self.table.add(*rows)
                for t in load:
                    self.track_sig[t] = db[t]
                    if t in info:
                        self.track_info[t] = info[t]
                self._va_cache = None
            log.debug("reconciled tracks: dropped %s, loaded %s", drop, load)
            return len(set(drop) | set(load))

    # -- what the ranking reads ------------------------------------------------------------------
    def candidates(self, image_emb: np.ndarray, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """FAISS top-K clip ids (widened until they cover n tracks) and their embeddings."""
        query = np.asarray(image_emb, np.float32).reshape(1, -1)
        with self._lock:
            total = len(self.table)
            if self.index is None or total == 0:
                return np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32)
            k_eff = min(max(k, n), total)
            while True:
                _, found = self.index.search(query, k_eff)
                ids = found[0][found[0] >= 0]
                ok, tids, _, _ = self.table.lookup(ids)
                ids = ids[ok]
                if len(np.unique(tids[ok])) >= n or k_eff >= min(total, MAX_K):
                    break
                k_eff = min(k_eff * 4, total, MAX_K)
            embs = np.asarray(self.index.reconstruct(ids), np.float32) if len(ids) else None
        if embs is None:
            return ids, np.zeros((0, self.dim), np.float32)
        return ids, embs

    def track_pool(self, image_emb: np.ndarray, n: int, k: int, count: int) -> list[int]:
        """The first ``count`` distinct tracks in FAISS order among candidates covering ``n`` tracks."""
        ids, _ = self.candidates(image_emb, n, k)
        if len(ids) == 0:
            return []
        with self._lock:
            ok, tids, _, _ = self.table.lookup(ids)
        order = tids[ok]
        _, first = np.unique(order, return_index=True)
        return [int(t) for t in order[np.sort(first)][:count]]

    def track_clips(self, track_ids: Sequence[int], limit: int | None = None) -> list[TrackClips]:
        """Each track's clips (at most ``limit``, evenly spaced in time) with embeddings and bounds."""
        out: list[TrackClips] = []
        with self._lock:
            for t in track_ids:
                cids = self.table.clips_of(int(t))
                if limit is not None:
                    cids = _spread(cids, limit)
                if not len(cids):
                    continue
                assert self.index is not None
                embs = np.asarray(self.index.reconstruct(cids), np.float32)
                _, _, starts, ends = self.table.lookup(cids)
                out.append(TrackClips(int(t), cids, embs, starts, ends))
        return out

    def bank_stats(self, track_id: int) -> tuple[float, float] | None:
        """The track's stored query-bank (mean, std), or None when none is stored yet."""
        info = self.track_info.get(track_id)
        if info is not None and info.bank_mean is not None and info.bank_std is not None:
            return info.bank_mean, info.bank_std
        late = self.late_bank_stats.get(track_id)
        if late is not None and info is not None and late[0] == info.sha256:
            return late[1], late[2]
        return None

    def tracks_without_bank_stats(self) -> list[tuple[int, str]]:
        """``(track id, content sha)`` of the loaded tracks with no stored statistics, by id."""
        with self._lock:
            infos = list(self.track_info.items())
        return sorted((t, i.sha256) for t, i in infos if i.bank_mean is None and t not in self.late_bank_stats)

    def set_bank_stats(self, stats: dict[int, tuple[str, float, float]]) -> None:
        """Adopt statistics stored after the tracks were loaded (``track id -> (sha, mean, std)``)."""
        self.late_bank_stats.update(stats)

    def nearest_va(self, target: np.ndarray, count: int) -> list[int]:
        """The ``count`` tracks whose predicted VA lies nearest ``target`` (ties: lower id first)."""
        with self._lock:
            if self._va_cache is None:
                known = [(t, i) for t, i in self.track_info.items() if i.valence is not None and i.arousal is not None]
                ids = np.array([t for t, _ in known], np.int64)
                va = np.array([[i.valence, i.arousal] for _, i in known], np.float64).reshape(-1, 2)
                self._va_cache = (ids, va)
            ids, va = self._va_cache
        if len(ids) == 0:
            return []
        dist = np.round(np.linalg.norm(va - target, axis=1), 9)
        order = np.lexsort((ids, dist))[:count]
        return [int(t) for t in ids[order]]


class TrackClips(NamedTuple):
    """One track's clips as the ranking scores them."""

    track_id: int
    clip_ids: np.ndarray
    embeddings: np.ndarray
    starts: np.ndarray
    ends: np.ndarray


def _spread(ids: np.ndarray, limit: int) -> np.ndarray:
    """At most ``limit`` of a track's clip ids (sorted by id, i.e. by time), evenly spaced."""
    if len(ids) <= limit:
        return ids
    return ids[np.linspace(0, len(ids) - 1, limit).round().astype(int)]


def _add_missing(index: ClipIndex, ids: np.ndarray, embs: np.ndarray) -> None:
    """Add vectors, skipping ids the index already holds (re-applying is then harmless)."""
    try:
        index.add(ids, embs)
    except ValueError:
        keep = ~np.isin(ids, index.ids())
        if keep.any():
            index.add(ids[keep], embs[keep])
