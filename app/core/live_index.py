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

Readers never wait for the sync, nor for each other: what they read is an immutable
:class:`Snapshot` (FAISS index, clip table, track tables), which the sync builds beside the
current one and swaps in with one assignment. A snapshot's FAISS index is frozen (searched
without a lock, in parallel); clips added since it was built sit in a small exact-search delta and
removed ones are filtered out, until the delta grows past ``COMPACT_AT`` and the sync folds both
into a fresh copy of the index.

The ranking that reads this view lives in `app.services.recommend`; this module holds no model.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import faiss
import numpy as np
from sqlalchemy.orm import Session

from app.core.catalogue import (
    ClipRows,
    TrackInfo,
    checkpoint_counts,
    event_track_ids_after,
    last_event_id,
    library_sources,
    load_clip_rows,
    load_clips_with_embeddings,
    track_hashes,
    track_infos,
)
from app.core.vector_index import ClipIndex, IndexMismatchError, IndexPolicy

log = logging.getLogger(__name__)

MAX_K = 65_536  # widest FAISS candidate list when tracks are few but long
SEARCH_THREADS = 1  # OpenMP threads per FAISS search: the parallelism is across requests
COMPACT_AT = 4_096  # clips added or removed since the snapshot's index was built: fold them in
COMPACT_FRACTION = 0.02  # ... or this share of the index, whichever is larger


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

    def copy(self) -> ClipTable:
        """An independent table: ``add``/``remove`` replace arrays and dict values, never write
        into them, so the copy shares them until one side changes."""
        twin = ClipTable()
        twin.ids, twin.track_ids, twin.starts, twin.ends = self.ids, self.track_ids, self.starts, self.ends
        twin.by_track = dict(self.by_track)
        return twin

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


class Snapshot:
    """One immutable view of the catalogue: what every read of one request sees.

    ``base`` is frozen; ``dead`` (sorted clip ids removed from it since) and the exact-search
    delta (``delta_ids`` sorted, ``delta_embs``) make up for changes since it was built. Nothing
    here is ever modified after the snapshot is published, so no reader takes a lock.
    """

    def __init__(
        self,
        base: ClipIndex | None,
        table: ClipTable,
        track_sig: Mapping[int, str],
        track_info: Mapping[int, TrackInfo],
        *,
        dim: int,
        dead: np.ndarray | None = None,
        delta_ids: np.ndarray | None = None,
        delta_embs: np.ndarray | None = None,
    ) -> None:
        self.base = base
        self.table = table
        self.track_sig = track_sig
        self.track_info = track_info
        self.dim = dim
        self.dead = np.zeros(0, np.int64) if dead is None else dead
        self.delta_ids = np.zeros(0, np.int64) if delta_ids is None else delta_ids
        self.delta_embs = np.zeros((0, dim), np.float32) if delta_embs is None else delta_embs

    @property
    def n_tracks(self) -> int:
        return len(self.track_sig)

    @property
    def n_clips(self) -> int:
        return len(self.table)

    def __len__(self) -> int:
        """Vectors searchable: the frozen base's, less those removed since, plus the delta."""
        return (len(self.base) if self.base is not None else 0) - len(self.dead) + len(self.delta_ids)

    @property
    def changes(self) -> int:
        """Clips added or removed since ``base`` was built."""
        return len(self.dead) + len(self.delta_ids)

    # -- the index interface (search, reconstruct, ids) ---------------------------------------
    def search(self, query: np.ndarray, k: int) -> np.ndarray:
        """Clip ids of the top-``k`` inner products with one query, best first."""
        if self.base is None or k <= 0:
            return np.zeros(0, np.int64)
        # One OpenMP thread per search, set in the calling thread (the setting is per thread):
        # requests search in parallel now, and a team per request oversubscribes the cores.
        faiss.omp_set_num_threads(SEARCH_THREADS)
        query = np.asarray(query, np.float32).reshape(1, -1)
        scores, found = self.base.search(query, k + len(self.dead))
        ids, sc = found[0], scores[0]
        keep = ids >= 0
        if len(self.dead):
            keep &= ~np.isin(ids, self.dead)
        ids, sc = ids[keep], sc[keep]
        if len(self.delta_ids):
            ids = np.concatenate([ids, self.delta_ids])
            sc = np.concatenate([sc, self.delta_embs @ query[0]])
            order = np.argsort(-sc, kind="stable")  # ties: the older (indexed) clip first
            ids = ids[order]
        return ids[:k].astype(np.int64)

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors of clip ids (KeyError for one not held)."""
        ids = np.asarray(ids, np.int64)
        if not len(self.delta_ids):
            if self.base is None:
                raise KeyError(f"clip ids not in the index: {ids[:5].tolist()}")
            return self.base.reconstruct(ids)
        pos = np.clip(np.searchsorted(self.delta_ids, ids), 0, len(self.delta_ids) - 1)
        in_delta = self.delta_ids[pos] == ids
        out = np.empty((len(ids), self.dim), np.float32)
        out[in_delta] = self.delta_embs[pos[in_delta]]
        if (~in_delta).any():
            assert self.base is not None
            out[~in_delta] = self.base.reconstruct(ids[~in_delta])
        return out

    def ids(self) -> np.ndarray:
        """Sorted live clip ids."""
        base = self.base.ids() if self.base is not None else np.zeros(0, np.int64)
        if len(self.dead):
            base = base[~np.isin(base, self.dead)]
        return np.union1d(base, self.delta_ids) if len(self.delta_ids) else base

    # -- what the ranking reads ------------------------------------------------------------------
    def candidates(self, image_emb: np.ndarray, n: int, k: int) -> np.ndarray:
        """FAISS top-K clip ids, K widened (x4, up to ``MAX_K``) until they cover ``n`` tracks."""
        total = len(self.table)
        if self.base is None or total == 0:
            return np.zeros(0, np.int64)
        k_eff = min(max(k, n), total)
        while True:
            ids = self.search(image_emb, k_eff)
            ok, tids, _, _ = self.table.lookup(ids)
            ids = ids[ok]
            if len(np.unique(tids[ok])) >= n or k_eff >= min(total, MAX_K):
                return ids
            k_eff = min(k_eff * 4, total, MAX_K)

    def track_pool(self, image_emb: np.ndarray, n: int, k: int, count: int) -> list[int]:
        """The first ``count`` distinct tracks in FAISS order among candidates covering ``n`` tracks."""
        return CandidateList(self, image_emb).track_pool(n, k, count)

    def track_clips(self, track_ids: Sequence[int], limit: int | None = None) -> list[TrackClips]:
        """Each track's clips (at most ``limit``, evenly spaced in time) with embeddings and bounds."""
        per_track = []
        for t in track_ids:
            cids = self.table.clips_of(int(t))
            if limit is not None:
                cids = _spread(cids, limit)
            if len(cids):
                per_track.append((int(t), cids))
        if not per_track:
            return []
        every = np.concatenate([cids for _, cids in per_track])  # one look-up for all the tracks
        embs = np.asarray(self.reconstruct(every), np.float32)
        _, _, starts, ends = self.table.lookup(every)
        out: list[TrackClips] = []
        at = 0
        for t, cids in per_track:
            sl = slice(at, at + len(cids))
            out.append(TrackClips(t, cids, embs[sl], starts[sl], ends[sl]))
            at += len(cids)
        return out

    @cached_property
    def _va(self) -> tuple[np.ndarray, np.ndarray]:
        """(track ids, VA rows) of the tracks with a predicted VA (computed once per snapshot)."""
        known = [(t, i) for t, i in self.track_info.items() if i.valence is not None and i.arousal is not None]
        ids = np.array([t for t, _ in known], np.int64)
        va = np.array([[i.valence, i.arousal] for _, i in known], np.float64).reshape(-1, 2)
        return ids, va

    def nearest_va(self, target: np.ndarray, count: int) -> list[int]:
        """The ``count`` tracks whose predicted VA lies nearest ``target`` (ties: lower id first)."""
        ids, va = self._va
        if len(ids) == 0:
            return []
        dist = np.round(np.linalg.norm(va - target, axis=1), 9)
        order = np.lexsort((ids, dist))[:count]
        return [int(t) for t in ids[order]]

    # -- a changed copy (the sync's) ---------------------------------------------------------------
    def changed(
        self,
        drop: Sequence[int],
        rows: ClipRows,
        embs: np.ndarray,
        sigs: Mapping[int, str],
        infos: Mapping[int, TrackInfo],
        policy: IndexPolicy,
        checkpoint_hash: str,
    ) -> Snapshot:
        """This snapshot with tracks ``drop`` removed and ``rows``/``embs`` (clips of ``sigs``'
        tracks) added; ``self`` is left as it is (readers may still hold it)."""
        table = self.table.copy()
        track_sig, track_info = dict(self.track_sig), dict(self.track_info)
        gone = [self.table.clips_of(t) for t in drop]
        gone_ids = np.concatenate(gone) if gone else np.zeros(0, np.int64)
        if len(gone_ids):
            table.remove(gone_ids)
        for t in drop:
            track_sig.pop(t, None)
            track_info.pop(t, None)
        new_ids = np.asarray(rows.ids, np.int64)
        if len(new_ids):
            fresh = ~np.isin(new_ids, table.ids)  # re-applying a change is harmless
            table.add(*rows)
        else:
            fresh = np.zeros(0, bool)
        track_sig.update(sigs)
        track_info.update(infos)
        # The delta loses removed clips; clips of the frozen base become dead.
        keep = ~np.isin(self.delta_ids, gone_ids) if len(gone_ids) else np.ones(len(self.delta_ids), bool)
        delta_ids, delta_embs = self.delta_ids[keep], self.delta_embs[keep]
        base_gone = gone_ids[~np.isin(gone_ids, self.delta_ids)] if len(gone_ids) else gone_ids
        dead = np.union1d(self.dead, base_gone) if len(base_gone) else self.dead
        if fresh.any():
            delta_ids = np.concatenate([delta_ids, new_ids[fresh]])
            delta_embs = np.concatenate([delta_embs, np.asarray(embs, np.float32)[fresh]])
            order = np.argsort(delta_ids, kind="stable")
            delta_ids, delta_embs = delta_ids[order], delta_embs[order]
        base = self.base
        if base is None:
            base = ClipIndex.build(
                np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32), checkpoint_hash=checkpoint_hash,
                policy=policy, dim=self.dim,
            ).freeze()  # fmt: skip
        size = len(base) + len(delta_ids)
        if len(dead) + len(delta_ids) > max(COMPACT_AT, int(COMPACT_FRACTION * size)):
            base = base.thawed_copy()  # readers keep searching the old one meanwhile
            base.remove(dead)
            _add_missing(base, delta_ids, delta_embs)
            base.freeze()
            dead, delta_ids = np.zeros(0, np.int64), np.zeros(0, np.int64)
            delta_embs = np.zeros((0, self.dim), np.float32)
        return Snapshot(
            base, table, track_sig, track_info, dim=self.dim, dead=dead, delta_ids=delta_ids, delta_embs=delta_embs
        )


class CandidateList:
    """One query's FAISS candidates in one snapshot, searched wider only when a pool needs more
    (at least x2 each time), with the tracks they name in first-seen order. A single pool
    (``Snapshot.track_pool``) and the pages of one ranking (``app.services.recommend``) share it,
    so a deep page re-uses the searches of the pages before it."""

    def __init__(self, snap: Snapshot, query: np.ndarray) -> None:
        self.snap, self.query = snap, query
        self._ids = np.zeros(0, np.int64)  # the candidates searched so far, best first
        self._tids = np.zeros(0, np.int64)
        self._firsts = np.zeros(0, np.int64)  # positions where a track first appears
        self._k_have = 0

    def _prefix(self, m: int) -> None:
        """Make sure the first ``m`` candidates are known."""
        if m <= self._k_have:
            return
        want = min(max(m, 2 * self._k_have), max(len(self.snap.table), m))
        ids = self.snap.search(self.query, want)
        ok, tids, _, _ = self.snap.table.lookup(ids)
        self._ids, self._tids = ids[ok], tids[ok]
        _, first = np.unique(self._tids, return_index=True)
        self._firsts = np.sort(first)
        self._k_have = want

    def track_pool(self, n: int, k: int, count: int) -> list[int]:
        """The first ``count`` distinct tracks in FAISS order among the top-K candidates, K
        widened x4 from ``max(k, n)`` until they cover ``n`` tracks (up to ``MAX_K``)."""
        total = len(self.snap.table)
        if self.snap.base is None or total == 0:
            return []
        k_eff = min(max(k, n), total)
        while True:
            self._prefix(k_eff)
            covered = int(np.searchsorted(self._firsts, min(k_eff, len(self._ids))))
            if covered >= n or k_eff >= min(total, MAX_K):
                break
            k_eff = min(k_eff * 4, total, MAX_K)
        return [int(t) for t in self._tids[self._firsts[:covered]][:count]]


class LiveIndex:
    """The replica's searchable view of the catalogue (thread-safe; readers take no lock).

    ``snapshot()`` is what one request should read throughout; the convenience methods below
    each read the current snapshot.
    """

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
        source_check_seconds: float = 30.0,
    ) -> None:
        self.session_factory = session_factory
        self.checkpoint_hash = checkpoint_hash
        self.dim = dim
        self.index_dir = index_dir
        self.policy = policy
        self.overlap = overlap
        self.full_resync_seconds = full_resync_seconds
        self.source_check_seconds = source_check_seconds
        # Library tracks whose audio file is gone (not recommended; /ready names them). Files
        # vanish without a catalogue event, so the sync looks every ``source_check_seconds``.
        self.missing_sources: frozenset[int] = frozenset()
        self._last_source_check = 0.0
        self._snap = Snapshot(None, ClipTable(), {}, {}, dim=dim)
        # Query-bank statistics stored after the track was loaded (the start-up backfill):
        # track id -> (content sha, mean, std). Only ever gains entries for a given content.
        self.late_bank_stats: dict[int, tuple[str, float, float]] = {}
        self.cursor = 0  # highest event id seen
        self._applied: set[int] = set()  # event ids seen inside the overlap window
        self._reconcile_lock = threading.Lock()  # writers: one DB-read-then-swap at a time
        self._last_full = 0.0
        self.loaded = False
        self.source = ""  # "file" or "database" after load()
        self.last_sync: float | None = None
        self.last_sync_error: str | None = None

    def snapshot(self) -> Snapshot:
        """The current immutable view (one attribute read: atomic)."""
        return self._snap

    # -- sizes and tables of the current snapshot --------------------------------------------------
    @property
    def n_tracks(self) -> int:
        return self._snap.n_tracks

    @property
    def n_clips(self) -> int:
        return self._snap.n_clips

    @property
    def table(self) -> ClipTable:
        return self._snap.table

    @property
    def track_sig(self) -> Mapping[int, str]:
        return self._snap.track_sig

    @property
    def track_info(self) -> Mapping[int, TrackInfo]:
        return self._snap.track_info

    @property
    def index(self) -> Snapshot | None:
        """The searchable index (``search``, ``reconstruct``, ``ids``), None before ``load``."""
        return self._snap if self.loaded else None

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
            index.freeze()
            self._snap = Snapshot(index, table, sigs, info, dim=self.dim)
            self.cursor, self._applied = int(cursor), set()
            self._last_full = time.monotonic()
            self.loaded, self.source = True, source
            self._check_sources(session)
        if stale:
            log.warning(
                "%d catalogue tracks were embedded by another checkpoint and are not searchable "
                "with this model; re-index them (photoscore index)",
                stale,
            )
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
            if time.monotonic() - self._last_source_check >= self.source_check_seconds:
                self._check_sources(session)
        self.last_sync, self.last_sync_error = time.time(), None
        return changed

    def refresh_tracks(self, track_ids: Iterable[int]) -> int:
        """Reconcile specific tracks now (after this replica's own add or delete)."""
        with self.session_factory() as session:
            return self._reconcile(session, sorted(set(track_ids)))

    def _full_compare(self, session: Session) -> int:
        db = track_hashes(session, self.checkpoint_hash)
        live = self._snap.track_sig
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
            snap = self._snap
            db = track_hashes(session, self.checkpoint_hash, track_ids)
            live = {t: snap.track_sig.get(t) for t in track_ids}
            drop = [t for t in track_ids if live[t] is not None and live[t] != db.get(t)]
            load = [t for t in track_ids if t in db and live[t] != db[t]]
            if not drop and not load:
                return 0
            info = track_infos(session, track_ids=load)
            rows, embs = load_clips_with_embeddings(session, dim=self.dim, track_ids=load)
            sigs = {t: db[t] for t in load}
            self._snap = snap.changed(
                drop, rows, embs, sigs, {t: info[t] for t in load if t in info}, self.policy, self.checkpoint_hash
            )
            for t in drop:
                self.late_bank_stats.pop(t, None)
            gone = {t for t, p in library_sources(session, self.checkpoint_hash, load).items() if not p.is_file()}
            self.missing_sources = frozenset((self.missing_sources - set(drop) - set(load)) | gone)
            log.debug("reconciled tracks: dropped %s, loaded %s", drop, load)
            return len(set(drop) | set(load))

    def _check_sources(self, session: Session) -> None:
        """Look for library tracks whose audio file was removed (one ``stat`` per such track)."""
        missing = frozenset(t for t, p in library_sources(session, self.checkpoint_hash).items() if not p.is_file())
        if missing != self.missing_sources and missing:
            log.warning(
                "%d library tracks have lost their audio file and are not recommended: ids %s",
                len(missing),
                sorted(missing)[:20],
            )
        self.missing_sources = missing
        self._last_source_check = time.monotonic()

    # -- what the ranking reads (each from the current snapshot) -------------------------------------
    def candidates(self, image_emb: np.ndarray, n: int, k: int) -> np.ndarray:
        """FAISS top-K clip ids widened until they cover n tracks (ids only: no vectors)."""
        return self._snap.candidates(image_emb, n, k)

    def track_pool(self, image_emb: np.ndarray, n: int, k: int, count: int) -> list[int]:
        return self._snap.track_pool(image_emb, n, k, count)

    def track_clips(self, track_ids: Sequence[int], limit: int | None = None) -> list[TrackClips]:
        return self._snap.track_clips(track_ids, limit)

    def nearest_va(self, target: np.ndarray, count: int) -> list[int]:
        return self._snap.nearest_va(target, count)

    def bank_stats(self, track_id: int, snap: Snapshot | None = None) -> tuple[float, float] | None:
        """The track's stored query-bank (mean, std), or None when none is stored yet."""
        info = (snap or self._snap).track_info.get(track_id)
        if info is None:
            return None
        if info.bank_mean is not None and info.bank_std is not None:
            return info.bank_mean, info.bank_std
        late = self.late_bank_stats.get(track_id)
        if late is not None and late[0] == info.sha256:
            return late[1], late[2]
        return None

    def tracks_without_bank_stats(self) -> list[tuple[int, str]]:
        """``(track id, content sha)`` of the loaded tracks with no stored statistics, by id."""
        infos = self._snap.track_info
        return sorted((t, i.sha256) for t, i in infos.items() if i.bank_mean is None and t not in self.late_bank_stats)

    def set_bank_stats(self, stats: dict[int, tuple[str, float, float]]) -> None:
        """Adopt statistics stored after the tracks were loaded (``track id -> (sha, mean, std)``)."""
        self.late_bank_stats.update(stats)


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
