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

Search: FAISS top-K clips by inner product name the candidate tracks (the first
``TRACKS_PER_RESULT * n`` distinct tracks in FAISS order) -> the learned similarity predictor
scores the candidate tracks' clips (all of them, or ``CLIPS_PER_TRACK`` evenly spaced ones) ->
a track's score is the mean over its clips, its segment its best clip -> tracks are ranked by
that score relative to the same track's scores for the checkpoint's query bank of training
photos (z = (score - bank mean) / bank std, querybank normalisation; computed once per track
and cached; the reported score is then the normal CDF of z: 0.5 = suits this photo as well as a
typical photo, near 1 = far better) -> top n tracks, ties broken by track id so the same image and catalogue always give
the same answer. A checkpoint without a query bank ranks by the score itself.

Why the mean and not the best clip: a song's mood is the mood of most of it. Ranked by their
best clip, songs whose clips vary a lot had a near match for every photo and opened almost
every list (hubs); on held-out photos and real songs the mean raised the share of top-10 songs
in the photo's quadrant. Why the bank: some songs score well against almost any photo (their
predicted mood sits where photos are dense); normalising by the bank halves how often one song
opens the list without lowering the quadrant share (model card).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.catalogue import checkpoint_counts, last_event_id, load_clip_table
from app.models import Clip, Track, TrackEvent
from app.vector_index import ClipIndex, IndexMismatchError

log = logging.getLogger(__name__)

_IN_CHUNK = 500  # ids per SQL IN (...) list
MAX_K = 65_536  # widest FAISS candidate list when tracks are few but long
SCORE_DECIMALS = 6  # scores are rounded before ranking so float noise cannot reorder ties
TRACKS_PER_RESULT = 4  # candidate tracks scored per requested result
CLIPS_PER_TRACK = 32  # clips scored per candidate track (evenly spaced beyond that)
BANK_CLIPS_PER_TRACK = 8  # clips per track scored against the query bank (once per track)


@dataclass(frozen=True)
class Hit:
    """One recommended track: its best clip and the reranked similarity."""

    track_id: int
    score: float
    start: float
    end: float
    clip_id: int


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


def _chunks(items: Sequence[int], size: int = _IN_CHUNK) -> Iterable[list[int]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


def _embeddings(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    if not blobs:
        return np.zeros((0, dim), np.float32)
    arr = np.frombuffer(b"".join(blobs), dtype=np.float32)
    return arr.reshape(len(blobs), dim).copy()


class LiveIndex:
    """The replica's searchable view of the catalogue (thread-safe)."""

    def __init__(
        self,
        session_factory: Callable[[], Session],
        *,
        checkpoint_hash: str,
        dim: int,
        index_dir: Path | None = None,
        exact_threshold: int = 200_000,
        overlap: int = 1000,
        full_resync_seconds: float = 300.0,
        on_applied: Callable[[int], None] | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.checkpoint_hash = checkpoint_hash
        self.dim = dim
        self.index_dir = index_dir
        self.exact_threshold = exact_threshold
        self.overlap = overlap
        self.full_resync_seconds = full_resync_seconds
        self.on_applied = on_applied
        self.index: ClipIndex | None = None
        self.table = ClipTable()
        self._norms: dict[int, tuple[str, float, float]] = {}  # track -> (content sha, bank mean, bank std)
        self.track_sig: dict[int, str] = {}  # track id -> content sha256
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
            sigs = dict(
                session.execute(
                    select(Track.id, Track.sha256).where(Track.checkpoint_hash == self.checkpoint_hash)
                ).all()
            )
            counts = checkpoint_counts(session)
            stale = sum(n for h, n in counts.items() if h != self.checkpoint_hash)
            clips = load_clip_table(session, self.checkpoint_hash)
            table = ClipTable()
            table.add(clips.ids, clips.track_ids, clips.starts, clips.ends)
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
        rows = session.execute(
            select(Clip.id, Clip.track_id, Clip.start, Clip.end, Clip.embedding)
            .join(Track, Track.id == Clip.track_id)
            .where(Track.checkpoint_hash == self.checkpoint_hash)
            .order_by(Clip.id)
            .execution_options(yield_per=10_000)
        ).all()
        table = ClipTable()
        ids = np.array([r[0] for r in rows], np.int64)
        table.add(
            ids,
            np.array([r[1] for r in rows], np.int64),
            np.array([r[2] for r in rows], np.float64),
            np.array([r[3] for r in rows], np.float64),
        )
        embs = _embeddings([r[4] for r in rows], self.dim)
        index = ClipIndex.build(
            ids,
            embs,
            checkpoint_hash=self.checkpoint_hash,
            exact_threshold=self.exact_threshold,
            dim=self.dim,
        )
        return index, table

    # -- following the catalogue ---------------------------------------------------------------
    def sync_once(self) -> int:
        """Apply catalogue events committed since the last poll; returns tracks reconciled."""
        with self.session_factory() as session:
            floor = max(0, self.cursor - self.overlap)
            rows = session.execute(
                select(TrackEvent.id, TrackEvent.track_id).where(TrackEvent.id > floor).order_by(TrackEvent.id)
            ).all()
            fresh = [(int(eid), int(tid)) for eid, tid in rows if int(eid) not in self._applied]
            changed = 0
            if fresh:
                changed = self._reconcile(session, sorted({tid for _, tid in fresh}))
                self._applied.update(eid for eid, _ in fresh)
                self.cursor = max(self.cursor, max(eid for eid, _ in fresh))
            self._applied = {e for e in self._applied if e > self.cursor - self.overlap}
            if time.monotonic() - self._last_full >= self.full_resync_seconds:
                changed += self._full_compare(session)
        self.last_sync, self.last_sync_error = time.time(), None
        if changed and self.on_applied is not None:
            self.on_applied(changed)
        return changed

    def refresh_tracks(self, track_ids: Iterable[int]) -> int:
        """Reconcile specific tracks now (after this replica's own add or delete)."""
        with self.session_factory() as session:
            return self._reconcile(session, sorted(set(track_ids)))

    def _full_compare(self, session: Session) -> int:
        db = dict(
            session.execute(select(Track.id, Track.sha256).where(Track.checkpoint_hash == self.checkpoint_hash)).all()
        )
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
            db: dict[int, str] = {}
            for chunk in _chunks(track_ids):
                db.update(
                    session.execute(
                        select(Track.id, Track.sha256).where(
                            Track.id.in_(chunk), Track.checkpoint_hash == self.checkpoint_hash
                        )
                    ).all()
                )
            with self._lock:
                live = {t: self.track_sig.get(t) for t in track_ids}
            drop = [t for t in track_ids if live[t] is not None and live[t] != db.get(t)]
            load = [t for t in track_ids if t in db and live[t] != db[t]]
            rows: list[Any] = []
            for chunk in _chunks(load):
                rows.extend(
                    session.execute(
                        select(Clip.id, Clip.track_id, Clip.start, Clip.end, Clip.embedding)
                        .where(Clip.track_id.in_(chunk))
                        .order_by(Clip.id)
                    ).all()
                )
            if not drop and not load:
                return 0
            ids = np.array([r[0] for r in rows], np.int64)
            embs = _embeddings([r[4] for r in rows], self.dim)
            with self._lock:
                assert self.index is not None
                for t in drop:
                    old = self.table.clips_of(t)
                    if len(old):
                        self.index.remove(old)
                        self.table.remove(old)
                    self.track_sig.pop(t, None)
                    self._norms.pop(t, None)
                if len(ids):
                    _add_missing(self.index, ids, embs)
                    self.table.add(
                        ids,
                        np.array([r[1] for r in rows], np.int64),
                        np.array([r[2] for r in rows], np.float64),
                        np.array([r[3] for r in rows], np.float64),
                    )
                for t in load:
                    self.track_sig[t] = db[t]
            log.debug("reconciled tracks: dropped %s, loaded %s", drop, load)
            return len(set(drop) | set(load))

    # -- search ----------------------------------------------------------------------------------
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

    def recommend(self, matcher: Any, image_emb: np.ndarray, n: int, k: int) -> list[Hit]:
        """Top n tracks for one image embedding (runs on the model thread: it calls the model)."""
        ids, _ = self.candidates(image_emb, n, k)
        if len(ids) == 0:
            return []
        with self._lock:
            ok, tids, _, _ = self.table.lookup(ids)
            order = tids[ok]
            _, first = np.unique(order, return_index=True)
            tracks = order[np.sort(first)][: max(n, TRACKS_PER_RESULT * n)]
            clip_ids = [_spread(self.table.clips_of(int(t)), CLIPS_PER_TRACK) for t in tracks]
            all_ids = np.concatenate(clip_ids) if clip_ids else np.zeros(0, np.int64)
            embs = np.asarray(self.index.reconstruct(all_ids), np.float32) if len(all_ids) else None
            _, _, starts, ends = self.table.lookup(all_ids)
        if embs is None:
            return []
        raw = np.asarray(matcher.similarity(image_emb, embs), np.float64)
        scores = np.clip(np.nan_to_num(raw, nan=0.0), 0.0, 1.0)
        bank = _bank(matcher)
        hits: list[Hit] = []
        rank: dict[int, float] = {}  # what orders the tracks: z with a bank, else the score
        at = 0
        for tid, cids in zip(tracks, clip_ids, strict=True):
            s = scores[at : at + len(cids)]
            score = float(s.mean())
            rank[int(tid)] = round(score, SCORE_DECIMALS)
            if bank is not None:
                mu, sd = self._bank_norm(matcher, bank, int(tid), embs[at : at + len(cids)])
                z = (score - mu) / sd
                rank[int(tid)] = round(z, SCORE_DECIMALS)
                score = 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))
            # best clip: the highest score; among equal scores the earliest segment, then the lowest clip id
            best = min(range(len(cids)), key=lambda i: (-round(s[i], SCORE_DECIMALS), starts[at + i], cids[i]))
            hits.append(
                Hit(
                    int(tid),
                    round(score, SCORE_DECIMALS),
                    float(starts[at + best]),
                    float(ends[at + best]),
                    int(cids[best]),
                )
            )
            at += len(cids)
        hits.sort(key=lambda h: (-rank[h.track_id], h.track_id))
        return hits[:n]

    def _bank_norm(self, matcher: Any, bank: np.ndarray, track_id: int, embs: np.ndarray) -> tuple[float, float]:
        """Mean and spread of a track's score over the query bank, cached per track content."""
        sig = self.track_sig.get(track_id, "")
        cached = self._norms.get(track_id)
        if cached is not None and cached[0] == sig:
            return cached[1], cached[2]
        pick = np.linspace(0, len(embs) - 1, min(len(embs), BANK_CLIPS_PER_TRACK)).round().astype(int)
        per_photo = np.asarray(matcher.similarity_matrix(bank, embs[pick]), np.float64).mean(axis=1)
        mu, sd = float(per_photo.mean()), max(float(per_photo.std()), 1e-3)
        self._norms[track_id] = (sig, mu, sd)
        return mu, sd


def _bank(matcher: Any) -> np.ndarray | None:
    """The matcher's query bank (rows of training-photo embeddings), or None without one."""
    bank = getattr(matcher, "query_bank", None)
    return bank if bank is not None and len(bank) else None


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
