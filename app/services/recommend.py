"""Recommendation: photo bytes -> ranked songs, the one path every shell uses.

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

Threads: the photo is decoded in a worker thread, embedded on the model thread (micro-batched
with other requests), and ranked in a worker thread; only the similarity predictor's calls hop
onto the model thread (``ModelThreadScorer``), so FAISS searches, table look-ups and SQL never
hold up another request's embedding.
"""

from __future__ import annotations

import asyncio
import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
from anyio import to_thread
from sqlalchemy.orm import Session

from app.core.catalogue import segment_va, tracks_by_id
from app.core.live_index import CandidateList, LiveIndex, Snapshot, TrackClips
from app.core.models import Track
from app.core.ranking import (
    STEER_WEIGHT,
    Candidate,
    best_window,
    duplicate_key,
    normal_artist,
    plan_playlist,
    score_step,
    shuffle_key,
    steer_gain,
    target_of,
)
from app.core.settings import Settings
from app.services.bank_stats import CLIPS_PER_TRACK, query_bank, track_bank_stats
from app.services.inference import InferenceWorker, ModelThreadScorer
from model.image import open_image
from model.transforms import image_tensor

SCORE_DECIMALS = 6  # scores are rounded before ranking so float noise cannot reorder ties
TRACKS_PER_RESULT = 4  # candidate tracks scored per requested result
CLIP_SECONDS = 2.0  # length of an indexed clip: segments up to this long are the best single clip
SPARE = 5  # extra results the first page's candidate pool is sized for (as /recommend always did)
MAX_RANKED = 1000  # paging cap: offset + n may not pass it (the songs a ranking can be paged through)


class Scorer(Protocol):
    """What the ranking needs from the model: a ``model.inference.Matcher`` or a ``ModelThreadScorer``."""

    @property
    def query_bank(self) -> np.ndarray | None: ...

    def similarity(self, image_emb: np.ndarray, clip_embs: np.ndarray) -> np.ndarray: ...

    def similarity_matrix(self, images: np.ndarray, clips: np.ndarray) -> np.ndarray: ...


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
        best = best_clip_index(self.clip_scores, self.starts, self.clip_ids)
        cids = self.clip_ids
        return Hit(
            self.track_id, self.score, float(self.starts[best]), float(self.ends[best]), int(cids[best]), self.rank
        )


class Ranker:
    """Ranks the live index's tracks for a photo embedding with the similarity predictor.

    One per app; thread-safe for reading. Each request reads one immutable snapshot of the live
    index throughout (``LiveIndex.snapshot``), so searches never wait for the sync or each other.
    """

    def __init__(self, live: LiveIndex, scorer: Scorer) -> None:
        self.live = live
        self.scorer = scorer
        self._norms: dict[int, tuple[str, float, float]] = {}  # track -> (content sha, bank mean, bank std)

    def recommend(self, image_emb: np.ndarray, n: int, k: int) -> list[Hit]:
        """Top n tracks for one image embedding."""
        snap = self.live.snapshot()
        tracks = snap.track_pool(image_emb, n, k, max(n, TRACKS_PER_RESULT * n))
        scored = self._score(image_emb, tracks, snap)
        missing = self.live.missing_sources
        ranked = sorted((t for t in scored.values() if t.track_id not in missing), key=lambda t: (-t.rank, t.track_id))
        return self._with_best_clip(image_emb, [t.hit() for t in ranked[:n]], snap)

    def _score(self, image_emb: np.ndarray, tracks: Sequence[int], snap: Snapshot) -> dict[int, Scored]:
        """Each track's score (mean over ``CLIPS_PER_TRACK`` spread clips, bank-normalised)."""
        keep = snap.track_clips(tracks, CLIPS_PER_TRACK)
        if not keep:
            return {}
        embs = np.concatenate([c.embeddings for c in keep])
        raw = np.asarray(self.scorer.similarity(image_emb, embs), np.float64)
        scores = np.clip(np.nan_to_num(raw, nan=0.0), 0.0, 1.0)
        bank = _bank(self.scorer)
        out: dict[int, Scored] = {}
        at = 0
        for clips in keep:
            tid, cids = clips.track_id, clips.clip_ids
            s = scores[at : at + len(cids)]
            score = float(s.mean())
            rank = round(score, SCORE_DECIMALS)  # what orders the tracks: z with a bank, else the score
            if bank is not None:
                mu, sd = self._bank_norm(bank, tid, embs[at : at + len(cids)], snap)
                z = (score - mu) / sd
                rank = round(z, SCORE_DECIMALS)
                score = 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))
            out[tid] = Scored(tid, rank, round(score, SCORE_DECIMALS), cids, clips.starts, clips.ends, s)
            at += len(cids)
        return out

    # -- search with options: steering, variety, paging, segment length ----------------------------
    def search(self, image_emb: np.ndarray, image_va: Sequence[float], options: SearchOptions, k: int) -> list[Hit]:
        """One page of the ranking for this photo under ``options``."""
        return self.search_page(image_emb, image_va, options, k)[0]

    def search_page(
        self, image_emb: np.ndarray, image_va: Sequence[float], options: SearchOptions, k: int
    ) -> tuple[list[Hit], bool]:
        """(page ``offset // n`` of the ranking, whether the next page holds a song).

        Without a shift, ``max_per_artist=0``, ``dedupe=False``, no seed, offset 0 and 2-second
        segments the first page is exactly ``recommend(n + spare)[:n]``. Every track's place in
        the order depends only on the photo and the track; page ``j`` takes the best songs not
        on an earlier page from the candidate pool sized for ``(j + 1) * n`` results, under the
        per-page artist cap, so pages never repeat a song, and a page may hold fewer than ``n``
        when the cap leaves too few. The pools are prefixes of one FAISS candidate list and each
        track is scored once, so a page costs one ranking, not a rebuild of the earlier pages
        (``_Pager``). Only the first ``MAX_RANKED`` songs can be paged through (``ValueError``
        beyond: the HTTP shell answers 422); the answer says "more" only when the next page,
        under the same options and inside that cap, is not empty.
        """
        n = max(1, options.n)
        if options.offset + n > MAX_RANKED:
            raise ValueError(f"offset + n = {options.offset + n} is past the paging cap of {MAX_RANKED} songs")
        snap = self.live.snapshot()
        index = options.offset // n
        pager = _Pager(self, snap, image_emb, image_va, options, k)
        pages = pager.pages(index + 1)
        page = pages[index] if index < len(pages) else []
        more = len(pages) > index and options.offset + 2 * n <= MAX_RANKED and pager.next_page_exists()
        return self.segments(image_emb, page, options.segment_seconds, snap), more

    def ranked(self, image_emb: np.ndarray, image_va: Sequence[float], options: SearchOptions, k: int) -> list[Scored]:
        """The first page (``options.n`` songs, offset ignored) as scored entries."""
        pages = self.pages(image_emb, image_va, options, k, 1)
        return pages[0] if pages else []

    def pages(
        self,
        image_emb: np.ndarray,
        image_va: Sequence[float],
        options: SearchOptions,
        k: int,
        count: int,
    ) -> list[list[Scored]]:
        """The first ``count`` pages of ``options.n`` songs (fewer when the catalogue runs out)."""
        return _Pager(self, self.live.snapshot(), image_emb, image_va, options, k).pages(count)

    def _steer(self, entry: Scored, photo: np.ndarray, target: np.ndarray, snap: Snapshot) -> Scored:
        info = snap.track_info.get(entry.track_id)
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

    def segments(
        self, image_emb: np.ndarray, page: list[Scored], seconds: float, snap: Snapshot | None = None
    ) -> list[Hit]:
        """Hits with their segment: the best clip of the whole track (every clip scored, not only
        the ranking's sample), or the best window of ``seconds``."""
        snap = snap or self.live.snapshot()
        scored = self._all_clips(image_emb, [e.track_id for e in page], snap)
        hits: list[Hit] = []
        for e in page:
            hit = e.hit()
            if e.track_id in scored:
                c, s = scored[e.track_id]
                if seconds > CLIP_SECONDS + 1e-6:
                    order = np.lexsort((c.clip_ids, c.starts))
                    w = best_window(c.starts[order], c.ends[order], s[order], seconds)
                    hit = replace(hit, start=w.start, end=w.end, segment_score=round(w.score, SCORE_DECIMALS))
                else:
                    hit = _best_clip(hit, c.clip_ids, c.starts, c.ends, s)
            info = snap.track_info.get(e.track_id)
            if info is not None:
                hit = replace(hit, valence=info.valence, arousal=info.arousal)
            hits.append(replace(hit, rank=e.rank))
        return hits

    def _with_best_clip(self, image_emb: np.ndarray, hits: list[Hit], snap: Snapshot) -> list[Hit]:
        """``recommend``'s hits with the best clip of the whole track as their segment."""
        scored = self._all_clips(image_emb, [h.track_id for h in hits], snap)
        out = []
        for hit in hits:
            if hit.track_id in scored:
                c, s = scored[hit.track_id]
                hit = _best_clip(hit, c.clip_ids, c.starts, c.ends, s)
            out.append(hit)
        return out

    def _all_clips(
        self, image_emb: np.ndarray, track_ids: Sequence[int], snap: Snapshot
    ) -> dict[int, tuple[TrackClips, np.ndarray]]:
        """Every clip of each track with its predicted similarity in [0, 1]: one predictor call
        for the whole page (one hop onto the model thread, not one per song)."""
        clips = snap.track_clips(track_ids)
        if not clips:
            return {}
        raw = np.asarray(self.scorer.similarity(image_emb, np.concatenate([c.embeddings for c in clips])), np.float64)
        scores = np.clip(np.nan_to_num(raw, nan=0.0), 0.0, 1.0)
        out, at = {}, 0
        for c in clips:
            out[c.track_id] = (c, scores[at : at + len(c.clip_ids)])
            at += len(c.clip_ids)
        return out

    def _bank_norm(
        self, bank: np.ndarray, track_id: int, embs: np.ndarray, snap: Snapshot | None = None
    ) -> tuple[float, float]:
        """Mean and spread of a track's score over the query bank: stored with the track when it
        was indexed; computed here (once per track content and process) only for a track stored
        before that and not yet reached by the start-up backfill. ``embs``: the scored sample."""
        snap = snap or self.live.snapshot()
        stored = self.live.bank_stats(track_id, snap)
        if stored is not None:
            return stored
        sig = snap.track_sig.get(track_id, "")
        cached = self._norms.get(track_id)
        if cached is not None and cached[0] == sig:
            return cached[1], cached[2]
        stats = track_bank_stats(self.scorer, embs, bank)
        assert stats is not None  # a bank and at least one clip
        self._norms[track_id] = (sig, *stats)
        return stats


class _Pager:
    """The pages of one ranking for one photo, options and snapshot.

    Page ``j`` is the best songs not on an earlier page among the pool sized for ``(j + 1) * n +
    spare`` results (``_pool``), filled under the per-page artist cap and the dedupe keys of
    everything shown before. The pools are nested prefixes of one FAISS candidate list, widened
    only when a page needs more, and every track is scored once and kept in one sorted list of
    tracks still available; so page 1,000 costs one FAISS search (or a few as the list widens) and
    one pass, not 1,000 searches.
    """

    def __init__(
        self,
        ranker: Ranker,
        snap: Snapshot,
        image_emb: np.ndarray,
        image_va: Sequence[float],
        options: SearchOptions,
        k: int,
    ) -> None:
        self.ranker, self.snap, self.emb, self.options, self.k = ranker, snap, image_emb, options, k
        self.n = max(1, options.n)
        self.photo = np.asarray(image_va, np.float64).reshape(2)
        self.target = np.asarray(target_of(self.photo.tolist(), options.shift), np.float64)
        self.steered = options.steered
        self.missing = ranker.live.missing_sources  # library tracks whose file is gone: never shown
        self.scored: dict[int, Scored] = {}
        self.avail: list[tuple[tuple, int, Scored]] = []  # (order, track, entry): pool tracks left, sorted
        self.in_pool: set[int] = set()
        self.shown: set[int] = set()
        self.keys: set[str] = set()
        self.wanted = self.n
        self.grown = -1
        self.exhausted = False
        self.candidates = CandidateList(snap, image_emb)

    # -- the candidate pool ------------------------------------------------------------------------
    def _pool(self, w: int) -> list[int]:
        """``Snapshot.track_pool(w, k, 4w)`` on this ranking's candidate list (+ the tracks
        nearest the target when steered)."""
        pool = self.candidates.track_pool(w, self.k, max(w, TRACKS_PER_RESULT * w))
        if self.steered:
            pool += self.snap.nearest_va(self.target, TRACKS_PER_RESULT * w)
        return list(dict.fromkeys(pool))

    # -- pages ---------------------------------------------------------------------------------------
    def pages(self, count: int) -> list[list[Scored]]:
        """The first ``count`` pages (fewer when nothing is left that a wider pool could add)."""
        pages: list[list[Scored]] = []
        total = self.snap.n_tracks
        while len(pages) < count:
            pool = self._pool(self.wanted + self.options.spare)
            new = [t for t in pool if t not in self.in_pool]
            if new:
                fresh = [t for t in new if t not in self.scored]
                if fresh:
                    self.scored.update(self.ranker._score(self.emb, fresh, self.snap))
                for t in new:
                    entry = self.scored.get(t)
                    if entry is None:
                        continue
                    if self.steered:
                        entry = self.ranker._steer(entry, self.photo, self.target, self.snap)
                    bisect.insort(self.avail, (Ranker._order(entry, self.options.seed), t, entry))
                self.in_pool.update(new)
            taken = self._fill()
            if taken:
                pages.append(taken)
            elif len(pool) >= total or len(pool) == self.grown:
                self.exhausted = True
                break  # nothing left that a wider pool could add
            self.grown = len(pool)
            self.wanted += self.n
        return pages

    def _key(self, track_id: int) -> tuple[str, str]:
        """(near-duplicate key, normalised artist) of a track."""
        info = self.snap.track_info.get(track_id)
        if info is None:
            return f"#{track_id}", ""
        return duplicate_key(info.title, info.artist), normal_artist(info.artist)

    def _fill(self) -> list[Scored]:
        """Up to n available entries, best first, one per near-duplicate group, capped per artist."""
        taken: list[Scored] = []
        per_artist: dict[str, int] = {}
        cap = self.options.max_per_artist
        i = 0
        while i < len(self.avail) and len(taken) < self.n:
            _, tid, entry = self.avail[i]
            key, artist = self._key(tid)
            if (self.options.dedupe and key in self.keys) or tid in self.missing:
                del self.avail[i]  # a song like it was shown, or its file is gone: never again
                continue
            if cap > 0 and artist and per_artist.get(artist, 0) >= cap:
                i += 1
                continue
            del self.avail[i]
            taken.append(entry)
            self.shown.add(tid)
            self.keys.add(key)
            if artist:
                per_artist[artist] = per_artist.get(artist, 0) + 1
        return taken

    def next_page_exists(self) -> bool:
        """Whether the page after those built would hold a song: one track not shown (and, with
        dedupe, unlike every shown one) in the pool that page would be filled from, widened as
        ``pages`` widens it. Its first such track always fits, since the artist cap is per page."""
        if self.exhausted:
            return False
        total = self.snap.n_tracks
        w, grown = self.wanted, self.grown
        checked: set[int] = set()
        while True:
            pool = self._pool(w + self.options.spare)
            for t in pool:
                if t in checked:
                    continue
                checked.add(t)
                if t in self.shown or t in self.missing:
                    continue
                if not (self.options.dedupe and self._key(t)[0] in self.keys):
                    return True
            if len(pool) >= total or len(pool) == grown:
                return False
            grown, w = len(pool), w + self.n


def best_clip_index(scores: np.ndarray, starts: np.ndarray, clip_ids: np.ndarray) -> int:
    """Index of the best clip: highest score rounded to ``SCORE_DECIMALS`` (so float noise cannot
    reorder ties), then the earliest start, then the lowest id. Rounding is monotonic, so only
    the clips within one rounding step of the top can tie; Python's ``round`` decides among those."""
    scores = np.asarray(scores, np.float64)
    top = round(float(scores.max()), SCORE_DECIMALS)
    near = np.flatnonzero(scores >= top - 10.0**-SCORE_DECIMALS)
    tied = near[[round(float(scores[i]), SCORE_DECIMALS) == top for i in near]]
    return int(tied[np.lexsort((np.asarray(clip_ids)[tied], np.asarray(starts)[tied]))[0]])


def _best_clip(hit: Hit, clip_ids: np.ndarray, starts: np.ndarray, ends: np.ndarray, scores: np.ndarray) -> Hit:
    """The hit with its segment at the best clip; among equal scores the earliest, then the lowest id."""
    best = best_clip_index(scores, starts, clip_ids)
    return replace(hit, start=float(starts[best]), end=float(ends[best]), clip_id=int(clip_ids[best]))


def _bank(scorer: Scorer) -> np.ndarray | None:
    """The matcher's query bank (rows of training-photo embeddings), or None without one."""
    return query_bank(scorer)


@dataclass(frozen=True)
class Recommendation:
    """One page of songs for a photo, with what the HTTP shell reports about them."""

    photo: tuple[float, float]  # the photo's predicted valence, arousal (clipped to [0, 1])
    target: tuple[float, float] | None  # the steered target, None unsteered
    hits: list[Hit]  # ranked; tracks deleted since the last index sync are left out
    tracks: dict[int, Track]
    segment_va: dict[int, tuple[float, float]]  # mean clip VA inside each hit's segment
    more: bool  # songs are left for later pages
    model_version: str


class Recommender:
    """``recommend(image, options)``: photo bytes -> one page of songs, for every shell.

    Owns the path from bytes to ranking: decoding in a worker thread, embedding on the model
    thread, ranking in a worker thread (the predictor's calls hop onto the model thread), SQL
    in a worker thread. Image errors surface as ``model.image.ImageDecodeError``. Cheap to make
    (one per request): the ranker, which caches per track, is the app's.
    """

    def __init__(
        self, ranker: Ranker, worker: InferenceWorker, session_factory: Callable[[], Session], settings: Settings
    ) -> None:
        self.ranker = ranker
        self.live = ranker.live
        self.worker = worker
        self.session_factory = session_factory
        self.settings = settings

    @property
    def search_k(self) -> int:
        return self.settings.search_k

    @classmethod
    def ranker_for(cls, live: LiveIndex, worker: InferenceWorker) -> Ranker:
        """The app's ranker: the predictor's calls run on ``worker``'s model thread."""
        return Ranker(live, ModelThreadScorer(worker))

    def decode(self, data: bytes) -> Any:
        """Bytes -> network input (raises ``ImageDecodeError``)."""
        return decode_photo(data, self.settings.max_image_pixels, int(self.worker.matcher.image_size))

    async def embed(self, data: bytes) -> tuple[np.ndarray, tuple[float, float]]:
        """(image embedding, clipped predicted VA) of one photo."""
        tensor = await to_thread.run_sync(self.decode, data)
        emb, va = await self.worker.embed_image(tensor)
        return emb, clean_va(va)

    async def embed_decoded(self, tensors: Sequence[Any]) -> list[tuple[np.ndarray, tuple[float, float]]]:
        """(embedding, clipped VA) of decoded photos, embedded together (micro-batched)."""
        embedded = await asyncio.gather(*(self.worker.embed_image(t) for t in tensors))
        return [(e, clean_va(va)) for e, va in embedded]

    async def playlist(
        self,
        embs: Sequence[np.ndarray],
        photos: Sequence[tuple[float, float]],
        options: SearchOptions,
        smoothness: float,
        max_per_artist: int,
        segment_seconds: Sequence[float] | None = None,
        distinct: bool = True,
    ) -> Playlist:
        """One song per photo: each photo's best ``options.n`` songs, then the path through
        them that trades score against VA jumps (``app.core.ranking.plan_playlist``; raises
        ``OptionError`` when the artist cap leaves no path). ``segment_seconds``: one segment
        length per photo (a video's scenes last different times), else ``options.segment_seconds``.
        ``distinct=False`` drops "no song twice": each place may get any of its candidates."""

        def ranked() -> list[list[Scored]]:
            return [self.ranker.ranked(e, va, options, self.search_k) for e, va in zip(embs, photos, strict=True)]

        pools = await to_thread.run_sync(ranked)
        cands = [[_candidate(self.live, e, options.steered, options.dedupe) for e in pool] for pool in pools]
        if not distinct:  # each place its own identity: a song may come back (a video's later scene)
            cands = [[replace(c, key=f"{c.key}@{i}") for c in pool] for i, pool in enumerate(cands)]
        path = await to_thread.run_sync(plan_playlist, cands, list(photos), smoothness, max_per_artist)
        picks = [next(e for e in pool if e.track_id == c.track_id) for pool, c in zip(pools, path, strict=True)]

        lengths = list(segment_seconds) if segment_seconds is not None else [options.segment_seconds] * len(picks)

        def segments() -> list[Hit]:
            return [self.ranker.segments(e, [p], s)[0] for e, p, s in zip(embs, picks, lengths, strict=True)]

        hits = await to_thread.run_sync(segments)
        tracks, seg_va = await to_thread.run_sync(self.describe, hits)
        return Playlist(
            hits=hits,
            tracks=tracks,
            segment_va=seg_va,
            total_score=sum(c.score for c in path) - smoothness * _penalty(path, photos),
            model_version=str(self.worker.matcher.version),
        )

    async def recommend(self, image: bytes, options: SearchOptions) -> Recommendation:
        emb, photo = await self.embed(image)
        hits, more = await to_thread.run_sync(self.ranker.search_page, emb, photo, options, self.search_k)
        target = target_of(photo, options.shift) if options.steered else None
        tracks, seg_va = await to_thread.run_sync(self.describe, hits)
        return Recommendation(
            photo=photo,
            target=target,
            hits=[h for h in hits if h.track_id in tracks],
            tracks=tracks,
            segment_va=seg_va,
            more=more,
            model_version=str(self.worker.matcher.version),
        )

    def describe(self, hits: Sequence[Hit]) -> tuple[dict[int, Track], dict[int, tuple[float, float]]]:
        """The hits' tracks and their segments' mean VA, in one short session."""
        with self.session_factory() as session:
            return _describe(session, hits)


@dataclass(frozen=True)
class Playlist:
    """One song per photo, in the photos' order, following their arc."""

    hits: list[Hit]  # one per photo
    tracks: dict[int, Track]
    segment_va: dict[int, tuple[float, float]]
    total_score: float  # sum of the songs' scores minus smoothness x the VA-jump penalty
    model_version: str


def _candidate(live: LiveIndex, entry: Scored, steered: bool, dedupe: bool) -> Candidate:
    """The planner's view of a ranked song. Its identity for "no song twice" is the
    near-duplicate key only with ``dedupe``; without it "Numb" and "Numb (Live)" are two songs
    (issue 24: the key was always built, so ``dedupe=false`` playlists were refused)."""
    info = live.track_info.get(entry.track_id)
    valence = 0.5 if info is None or info.valence is None else info.valence
    arousal = 0.5 if info is None or info.arousal is None else info.arousal
    key = duplicate_key(info.title, info.artist) if info is not None and dedupe else f"#{entry.track_id}"
    return Candidate(
        track_id=entry.track_id,
        score=entry.rank if steered else entry.score,
        valence=valence,
        arousal=arousal,
        key=key,
        artist=normal_artist(info.artist) if info is not None else "",
    )


def _penalty(path: list[Candidate], photos: Sequence[tuple[float, float]]) -> float:
    total = 0.0
    for i in range(1, len(path)):
        jump = float(np.hypot(path[i].valence - path[i - 1].valence, path[i].arousal - path[i - 1].arousal))
        allowance = float(np.hypot(photos[i][0] - photos[i - 1][0], photos[i][1] - photos[i - 1][1]))
        total += max(0.0, jump - allowance)
    return total


def _describe(session: Session, hits: Sequence[Hit]) -> tuple[dict[int, Track], dict[int, tuple[float, float]]]:
    tracks = tracks_by_id(session, [h.track_id for h in hits])
    seg = segment_va(session, [(h.track_id, h.start, h.end) for h in hits if h.track_id in tracks])
    return tracks, seg


def decode_photo(data: bytes, max_pixels: int, size: int) -> Any:
    """Photo bytes -> network input tensor (raises ``ImageDecodeError``).

    JPEGs decode in draft mode (DCT scaling to no less than ``size``): several times faster for
    camera photos, and the very pixels training cached (``model.prepare`` decodes the same way)."""
    return image_tensor(open_image(data, max_pixels=max_pixels, draft_size=size), size)


def clean_va(va: np.ndarray) -> tuple[float, float]:
    """Predicted VA as two floats in [0, 1] (NaN -> 0.5)."""
    va = np.clip(np.nan_to_num(np.asarray(va, np.float64), nan=0.5), 0.0, 1.0)
    return float(va[0]), float(va[1])
