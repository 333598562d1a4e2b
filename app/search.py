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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.catalogue import checkpoint_counts, last_event_id, load_clip_table
from app.models import Clip, Track, TrackEvent
from app.ranking import (
    STEER_WEIGHT,
    best_window,
    duplicate_key,
    normal_artist,
    score_step,
    shuffle_key,
    steer_gain,
    target_of,
)
from app.vector_index import DEFAULT_COMPRESSED_THRESHOLD, ClipIndex, IndexMismatchError

log = logging.getLogger(__name__)

_IN_CHUNK = 500  # ids per SQL IN (...) list
MAX_K = 65_536  # widest FAISS candidate list when tracks are few but long
SCORE_DECIMALS = 6  # scores are rounded before ranking so float noise cannot reorder ties
TRACKS_PER_RESULT = 4  # candidate tracks scored per requested result
CLIPS_PER_TRACK = 32  # clips scored per candidate track (evenly spaced beyond that)
BANK_CLIPS_PER_TRACK = 8  # clips per track scored against the query bank (once per track)
CLIP_SECONDS = 2.0  # length of an indexed clip: segments up to this long are the best single clip
SPARE = 5  # extra results the first page's candidate pool is sized for (as /recommend always did)


@dataclass(frozen=True)
class Hit:
    """One recommended track: its segment and the reranked similarity."""

    track_id: int
    score: float
    start: float
    end: float
    clip_id: int
    rank: float = 0.0  # what ordered it: z (or the score) unsteered, score + steering gain steered
    valence: float | None = None  # the track's predicted VA (mean over its clips)
    arousal: float | None = None
    segment_score: float | None = None  # mean predicted similarity inside a window longer than a clip


@dataclass(frozen=True)
class TrackInfo:
    """Per-track metadata the search reads without a database round trip."""

    sha256: str
    title: str
    artist: str | None
    valence: float | None
    arousal: float | None
    duration: float


@dataclass(frozen=True)
class SearchOptions:
    """What /recommend and /playlist may ask of a search (defaults: the plain ranking)."""

    n: int = 10
    offset: int = 0
    shift: tuple[float, float] = (0.0, 0.0)  # valence, arousal; already validated and clipped
    max_per_artist: int = 0  # 0: no cap
    dedupe: bool = False
    seed: int | None = None
    segment_seconds: float = CLIP_SECONDS
    spare: int = SPARE

    @property
    def steered(self) -> bool:
        return self.shift != (0.0, 0.0)


@dataclass(frozen=True)
class Scored:
    """A scored candidate track: its rank value, reported score and its scored clips."""

    track_id: int
    rank: float
    score: float
    clip_ids: np.ndarray = field(repr=False, compare=False)
    starts: np.ndarray = field(repr=False, compare=False)
    ends: np.ndarray = field(repr=False, compare=False)
    clip_scores: np.ndarray = field(repr=False, compare=False)
    gain: float | None = None  # steering: VA distance gained towards the target (None unsteered)

    def hit(self) -> Hit:
        """Segment = the best scored clip; among equal scores the earliest, then the lowest id."""
        s, cids = self.clip_scores, self.clip_ids
        best = min(range(len(cids)), key=lambda i: (-round(s[i], SCORE_DECIMALS), self.starts[i], cids[i]))
        return Hit(
            self.track_id, self.score, float(self.starts[best]), float(self.ends[best]), int(cids[best]), self.rank
        )


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
        compressed_threshold: int = DEFAULT_COMPRESSED_THRESHOLD,
        overlap: int = 1000,
        full_resync_seconds: float = 300.0,
        on_applied: Callable[[int], None] | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.checkpoint_hash = checkpoint_hash
        self.dim = dim
        self.index_dir = index_dir
        self.exact_threshold = exact_threshold
        self.compressed_threshold = compressed_threshold
        self.overlap = overlap
        self.full_resync_seconds = full_resync_seconds
        self.on_applied = on_applied
        self.index: ClipIndex | None = None
        self.table = ClipTable()
        self._norms: dict[int, tuple[str, float, float]] = {}  # track -> (content sha, bank mean, bank std)
        self.track_sig: dict[int, str] = {}  # track id -> content sha256
        self.track_info: dict[int, TrackInfo] = {}  # what variety and steering read, per track
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
            info = _track_info(session, Track.checkpoint_hash == self.checkpoint_hash)
            sigs = {t: i.sha256 for t, i in info.items()}
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
            compressed_threshold=self.compressed_threshold,
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
            info: dict[int, TrackInfo] = {}
            for chunk in _chunks(load):
                info.update(_track_info(session, Track.id.in_(chunk)))
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
                    self.track_info.pop(t, None)
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
                    if t in info:
                        self.track_info[t] = info[t]
                self._va_cache = None
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
        tracks = self._pool(image_emb, n, k)
        scored = self._score(matcher, image_emb, tracks)
        ranked = sorted(scored.values(), key=lambda t: (-t.rank, t.track_id))
        return [t.hit() for t in ranked[:n]]

    def _pool(self, image_emb: np.ndarray, n: int, k: int) -> list[int]:
        """Candidate tracks: the first ``TRACKS_PER_RESULT * n`` distinct tracks in FAISS order."""
        ids, _ = self.candidates(image_emb, n, k)
        if len(ids) == 0:
            return []
        with self._lock:
            ok, tids, _, _ = self.table.lookup(ids)
        order = tids[ok]
        _, first = np.unique(order, return_index=True)
        return [int(t) for t in order[np.sort(first)][: max(n, TRACKS_PER_RESULT * n)]]

    def _score(self, matcher: Any, image_emb: np.ndarray, tracks: Sequence[int]) -> dict[int, Scored]:
        """Each track's score (mean over ``CLIPS_PER_TRACK`` spread clips, bank-normalised)."""
        with self._lock:
            clip_ids = [_spread(self.table.clips_of(int(t)), CLIPS_PER_TRACK) for t in tracks]
            keep = [(int(t), c) for t, c in zip(tracks, clip_ids, strict=True) if len(c)]
            all_ids = np.concatenate([c for _, c in keep]) if keep else np.zeros(0, np.int64)
            embs = np.asarray(self.index.reconstruct(all_ids), np.float32) if len(all_ids) else None
            _, _, starts, ends = self.table.lookup(all_ids)
        if embs is None:
            return {}
        raw = np.asarray(matcher.similarity(image_emb, embs), np.float64)
        scores = np.clip(np.nan_to_num(raw, nan=0.0), 0.0, 1.0)
        bank = _bank(matcher)
        out: dict[int, Scored] = {}
        at = 0
        for tid, cids in keep:
            s = scores[at : at + len(cids)]
            score = float(s.mean())
            rank = round(score, SCORE_DECIMALS)  # what orders the tracks: z with a bank, else the score
            if bank is not None:
                mu, sd = self._bank_norm(matcher, bank, tid, embs[at : at + len(cids)])
                z = (score - mu) / sd
                rank = round(z, SCORE_DECIMALS)
                score = 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))
            sl = slice(at, at + len(cids))
            out[tid] = Scored(tid, rank, round(score, SCORE_DECIMALS), cids, starts[sl].copy(), ends[sl].copy(), s)
            at += len(cids)
        return out

    # -- search with options: steering, variety, paging, segment length ----------------------------
    def search(
        self, matcher: Any, image_emb: np.ndarray, image_va: Sequence[float], options: SearchOptions, k: int
    ) -> list[Hit]:
        """One page of the ranking for this photo under ``options`` (runs on the model thread)."""
        return self.search_page(matcher, image_emb, image_va, options, k)[0]

    def search_page(
        self, matcher: Any, image_emb: np.ndarray, image_va: Sequence[float], options: SearchOptions, k: int
    ) -> tuple[list[Hit], bool]:
        """(page ``offset // n`` of the ranking, whether songs are left for later pages).

        Without a shift, ``max_per_artist=0``, ``dedupe=False``, no seed, offset 0 and 2-second
        segments the first page is exactly ``recommend(n + spare)[:n]``. Every track's place in
        the order depends only on the photo and the track; page ``j`` takes the best songs not
        on an earlier page from the candidate pool sized for ``j * n`` results, under the
        per-page artist cap. Each request rebuilds the earlier pages the same way, so pages
        never repeat a song, and a page may hold fewer than ``n`` when the cap leaves too few.
        """
        index = options.offset // max(1, options.n)
        pages = self.pages(matcher, image_emb, image_va, options, k, index + 1)
        page = pages[index] if index < len(pages) else []
        more = len(pages) > index and sum(len(p) for p in pages) < self.n_tracks
        return self.segments(matcher, image_emb, page, options.segment_seconds), more

    def ranked(
        self, matcher: Any, image_emb: np.ndarray, image_va: Sequence[float], options: SearchOptions, k: int
    ) -> list[Scored]:
        """The first page (``options.n`` songs, offset ignored) as scored entries."""
        pages = self.pages(matcher, image_emb, image_va, options, k, 1)
        return pages[0] if pages else []

    def pages(
        self,
        matcher: Any,
        image_emb: np.ndarray,
        image_va: Sequence[float],
        options: SearchOptions,
        k: int,
        count: int,
    ) -> list[list[Scored]]:
        """The first ``count`` pages of ``options.n`` songs (fewer when the catalogue runs out)."""
        n = max(1, options.n)
        photo = np.asarray(image_va, np.float64).reshape(2)
        target = np.asarray(target_of(photo, options.shift), np.float64)
        steered = options.steered
        scored: dict[int, Scored] = {}
        pages: list[list[Scored]] = []
        shown_ids: set[int] = set()
        shown_keys: set[str] = set()
        total = self.n_tracks
        grown = -1
        wanted = n
        while len(pages) < count:
            pool = self._pool(image_emb, wanted + options.spare, k)
            if steered:
                pool += self._near(target, TRACKS_PER_RESULT * (wanted + options.spare))
            pool = list(dict.fromkeys(pool))
            fresh = [t for t in pool if t not in scored]
            if fresh:
                scored.update(self._score(matcher, image_emb, fresh))
            entries = [scored[t] for t in pool if t in scored]
            if steered:
                entries = [self._steer(e, photo, target) for e in entries]
            entries.sort(key=lambda e: self._order(e, options.seed))
            taken = self._fill(entries, n, options, shown_ids, shown_keys)
            if taken:
                pages.append(taken)
            elif len(pool) >= total or len(pool) == grown:
                break  # nothing left that a wider pool could add
            grown = len(pool)
            wanted += n
        return pages

    def _near(self, target: np.ndarray, count: int) -> list[int]:
        """The ``count`` tracks whose predicted VA lies nearest the target (steering widens the
        candidates with them: FAISS only proposes songs near the photo itself)."""
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

    def _steer(self, entry: Scored, photo: np.ndarray, target: np.ndarray) -> Scored:
        info = self.track_info.get(entry.track_id)
        if info is None or info.valence is None or info.arousal is None:
            return replace(entry, rank=round(entry.score, SCORE_DECIMALS))
        gain = float(steer_gain(np.array([[info.valence, info.arousal]]), photo, target)[0])
        return replace(entry, rank=round(entry.score + STEER_WEIGHT * gain, SCORE_DECIMALS), gain=gain)

    @staticmethod
    def _order(entry: Scored, seed: int | None) -> tuple:
        if seed is None:
            return (-entry.rank, entry.track_id)
        value = entry.rank if entry.gain is not None else entry.score
        return (-score_step(value), shuffle_key(seed, entry.track_id), entry.track_id)

    def _fill(
        self, entries: list[Scored], n: int, options: SearchOptions, shown: set[int], keys: set[str]
    ) -> list[Scored]:
        """Up to n entries not shown before, one per near-duplicate group, capped per artist."""
        taken: list[Scored] = []
        per_artist: dict[str, int] = {}
        for e in entries:
            if len(taken) >= n:
                break
            if e.track_id in shown:
                continue
            info = self.track_info.get(e.track_id)
            key = duplicate_key(info.title, info.artist) if info is not None else f"#{e.track_id}"
            if options.dedupe and key in keys:
                continue
            artist = normal_artist(info.artist) if info is not None else ""
            if options.max_per_artist > 0 and artist and per_artist.get(artist, 0) >= options.max_per_artist:
                continue
            taken.append(e)
            shown.add(e.track_id)
            keys.add(key)
            if artist:
                per_artist[artist] = per_artist.get(artist, 0) + 1
        return taken

    def segments(self, matcher: Any, image_emb: np.ndarray, page: list[Scored], seconds: float) -> list[Hit]:
        """Hits with their segment: the best scored clip, or the best window of ``seconds``."""
        hits: list[Hit] = []
        for e in page:
            hit = e.hit()
            if seconds > CLIP_SECONDS + 1e-6:
                with self._lock:
                    cids = self.table.clips_of(e.track_id)
                    embs = np.asarray(self.index.reconstruct(cids), np.float32) if len(cids) else None
                    _, _, starts, ends = self.table.lookup(cids)
                if embs is not None:
                    raw = np.asarray(matcher.similarity(image_emb, embs), np.float64)
                    s = np.clip(np.nan_to_num(raw, nan=0.0), 0.0, 1.0)
                    order = np.lexsort((cids, starts))
                    w = best_window(starts[order], ends[order], s[order], seconds)
                    hit = replace(hit, start=w.start, end=w.end, segment_score=round(w.score, SCORE_DECIMALS))
            info = self.track_info.get(e.track_id)
            if info is not None:
                hit = replace(hit, valence=info.valence, arousal=info.arousal)
            hits.append(replace(hit, rank=e.rank))
        return hits

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


def _track_info(session: Session, where: Any) -> dict[int, TrackInfo]:
    rows = session.execute(
        select(Track.id, Track.sha256, Track.title, Track.artist, Track.valence, Track.arousal, Track.duration).where(
            where
        )
    ).all()
    return {
        int(r[0]): TrackInfo(
            r[1],
            r[2] or "",
            r[3],
            None if r[4] is None else float(r[4]),
            None if r[5] is None else float(r[5]),
            float(r[6] or 0.0),
        )
        for r in rows
    }


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
