"""The ranking: one photo embedding -> songs in order, page after page. Every shell ranks here.

Pipeline, top to bottom (``Ranking.pages``):

1. **Candidates.** FAISS top-K clips by inner product name the candidate tracks: the first
   ``TRACKS_PER_RESULT * w`` distinct tracks in FAISS order, for a pool sized for ``w`` results
   (plus the tracks whose VA lies nearest the target when steered).
2. **Scores.** The learned similarity predictor scores each candidate track's clips (all of
   them, or ``CLIPS_PER_TRACK`` evenly spaced ones); a track's score is the mean over them,
   relative to the same track's scores for the checkpoint's query bank of training photos
   (z = (score - bank mean) / bank std, querybank normalisation), minus ``va_weight`` x the
   distance between the track's and the photo's predicted valence-arousal; the reported score is
   the normal CDF of that (0.5 = suits this photo as well as a typical photo, at zero VA
   distance). A checkpoint without a query bank ranks by the score itself.
3. **Steering.** With a shift, a track ranks by its score plus ``STEER_WEIGHT`` x the VA distance
   it gains towards the target.
4. **Order.** Best first, ties broken by track id (or, with a seed, reshuffled inside each score
   step), so the same image and catalogue always give the same answer.
5. **Pages.** Page ``j`` takes the best songs not shown before from the pool sized for
   ``(j + 1) * n + spare`` results, under the per-page artist cap and the dedupe keys of
   everything shown before; songs whose library file is gone are never shown.
6. **Segments.** Each song of the page gets the best clip of the whole track (every clip
   scored), or the best window of ``segment_seconds``.

Why the mean and not the best clip: a song's mood is the mood of most of it. Ranked by their
best clip, songs whose clips vary a lot had a near match for every photo and opened almost every
list (hubs). Why the bank: some songs score well against almost any photo; normalising by the
bank halves how often one song opens the list without lowering the quadrant share (model card).
Why the VA distance: the learned score and the two predicted numbers err differently; their sum
ranked better on validation than either alone, with no more hubs (model card, hubness study).

The plain ranking is ``SearchOptions()``; the first page of ``n`` is the best ``n`` of the pool
sized for ``n + spare``. Each request reads one immutable snapshot of the live index throughout
(``LiveIndex.snapshot``), so searches never wait for the sync or each other.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from app.core.live_index import CandidateList, LiveIndex, Snapshot, TrackClips
from app.core.ranking import (
    STEER_WEIGHT,
    VA_WEIGHT,
    best_window,
    duplicate_key,
    normal_artist,
    score_step,
    shuffle_key,
    steer_gain,
    target_of,
)
from app.core.vector_index import DEFAULT_SEARCH_K
from app.services.bank_stats import CLIPS_PER_TRACK, query_bank, track_bank_stats

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
class Query:
    """A photo as the ranking sees it: its embedding and its predicted valence, arousal."""

    embedding: np.ndarray
    va: tuple[float, float] = (0.5, 0.5)  # predicted valence, arousal in [0, 1]


@dataclass(frozen=True)
class SearchOptions:
    """What a search may ask for; the defaults are the plain ranking."""

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


@dataclass(frozen=True)
class Page:
    """One page of a ranking: its songs, where it starts, and where the next page starts (None
    when no later page holds a song or the paging cap is reached)."""

    results: list[Hit]
    offset: int
    next_offset: int | None


class BankNorms:
    """Each track's (mean, std) score over the query bank: stored with the track when it was
    indexed (``LiveIndex.bank_stats``); computed here, once per track content and process, only
    for a track stored before that and not yet reached by the start-up backfill."""

    def __init__(self, live: LiveIndex, scorer: Scorer) -> None:
        self.live, self.scorer = live, scorer
        self._cache: dict[int, tuple[str, float, float]] = {}  # track -> (content sha, mean, std)

    def get(self, bank: np.ndarray, track_id: int, embs: np.ndarray, snap: Snapshot) -> tuple[float, float]:
        """``embs``: the ranking's scored sample of the track's clips."""
        stored = self.live.bank_stats(track_id, snap)
        if stored is not None:
            return stored
        sig = snap.track_sig.get(track_id, "")
        cached = self._cache.get(track_id)
        if cached is not None and cached[0] == sig:
            return cached[1], cached[2]
        stats = track_bank_stats(self.scorer, embs, bank)
        assert stats is not None  # a bank and at least one clip
        self._cache[track_id] = (sig, *stats)
        return stats


class Ranker:
    """The app's ranking: the live index, the scorer and the bank-norm cache it shares between
    requests. Thread-safe for reading. ``rank`` yields a photo's pages in order; ``page`` is one
    of them with its segments."""

    def __init__(
        self, live: LiveIndex, scorer: Scorer, search_k: int = DEFAULT_SEARCH_K, va_weight: float = VA_WEIGHT
    ) -> None:
        self.live = live
        self.scorer = scorer
        self.search_k = search_k
        self.va_weight = va_weight
        self.norms = BankNorms(live, scorer)

    def _ranking(self, query: Query, options: SearchOptions, snap: Snapshot) -> Ranking:
        return Ranking(
            query, options, snap, self.scorer, self.norms, self.live.missing_sources, self.search_k, self.va_weight
        )

    def rank(self, query: Query, options: SearchOptions = SearchOptions()) -> Iterator[list[Scored]]:
        """The pages of ``options.n`` songs in order (offset ignored), built lazily."""
        return self._ranking(query, options, self.live.snapshot()).pages()

    def page(self, query: Query, options: SearchOptions = SearchOptions()) -> Page:
        """Page ``offset // n`` of the ranking, with segments.

        Only the first ``MAX_RANKED`` songs can be paged through (``ValueError`` beyond: the HTTP
        shell answers 422); ``next_offset`` is set only when the next page, under the same
        options and inside that cap, is not empty."""
        n = max(1, options.n)
        if options.offset + n > MAX_RANKED:
            raise ValueError(f"offset + n = {options.offset + n} is past the paging cap of {MAX_RANKED} songs")
        snap = self.live.snapshot()
        ranking = self._ranking(query, options, snap)
        index = options.offset // n
        found: list[Scored] | None = None
        for i, entries in enumerate(ranking.pages()):
            if i == index:
                found = entries
                break
        more = found is not None and options.offset + 2 * n <= MAX_RANKED and ranking.next_page_exists()
        hits = segments(query.embedding, found or [], options.segment_seconds, snap, self.scorer)
        return Page(hits, options.offset, options.offset + n if more else None)

    def segments(self, query: Query, entries: list[Scored], seconds: float) -> list[Hit]:
        """``entries`` as hits with their segments (see ``segments``), on the current snapshot."""
        return segments(query.embedding, entries, seconds, self.live.snapshot(), self.scorer)


class Ranking:
    """The pages of one ranking for one photo, options and snapshot.

    The pools are nested prefixes of one FAISS candidate list, widened only when a page needs
    more, and every track is scored once and kept in one sorted list of tracks still available;
    so page 1,000 costs one FAISS search (or a few as the list widens) and one pass, not 1,000
    searches.
    """

    def __init__(
        self,
        query: Query,
        options: SearchOptions,
        snap: Snapshot,
        scorer: Scorer,
        norms: BankNorms,
        missing: frozenset[int],
        search_k: int,
        va_weight: float,
    ) -> None:
        self.query, self.options, self.snap, self.scorer, self.norms = query, options, snap, scorer, norms
        self.k = search_k
        self.va_weight = va_weight
        self.n = max(1, options.n)
        self.photo = np.asarray(query.va, np.float64).reshape(2)
        self.target = np.asarray(target_of(self.photo.tolist(), options.shift), np.float64)
        self.missing = missing  # library tracks whose file is gone: never shown
        self.scored: dict[int, Scored] = {}
        self.avail: list[tuple[tuple, int, Scored]] = []  # (order, track, entry): pool tracks left, sorted
        self.in_pool: set[int] = set()
        self.shown: set[int] = set()
        self.keys: set[str] = set()
        self.wanted = self.n
        self.grown = -1
        self.exhausted = False
        self.candidates = CandidateList(snap, query.embedding)

    # -- 1. candidates ---------------------------------------------------------------------------
    def _pool(self, w: int) -> list[int]:
        """The first ``4w`` distinct tracks on this ranking's candidate list (+ the tracks nearest
        the target when steered)."""
        pool = self.candidates.track_pool(w, self.k, max(w, TRACKS_PER_RESULT * w))
        if self.options.steered:
            pool += self.snap.nearest_va(self.target, TRACKS_PER_RESULT * w)
        return list(dict.fromkeys(pool))

    # -- 2. scores, 3. steering, 4. order -----------------------------------------------------------
    def _admit(self, tracks: list[int]) -> None:
        """Score the pool's new tracks and file them in the sorted list of available ones."""
        fresh = [t for t in tracks if t not in self.scored]
        if fresh:
            self.scored.update(score_tracks(self.query, fresh, self.snap, self.scorer, self.norms, self.va_weight))
        for t in tracks:
            entry = self.scored.get(t)
            if entry is None:
                continue
            if self.options.steered:
                entry = steer(entry, self.photo, self.target, self.snap)
            bisect.insort(self.avail, (order_key(entry, self.options.seed), t, entry))
        self.in_pool.update(tracks)

    # -- 5. pages ------------------------------------------------------------------------------------
    def pages(self) -> Iterator[list[Scored]]:
        """Pages in order, until nothing is left that a wider pool could add."""
        total = self.snap.n_tracks
        while True:
            pool = self._pool(self.wanted + self.options.spare)
            new = [t for t in pool if t not in self.in_pool]
            if new:
                self._admit(new)
            taken = self._fill()
            if not taken and (len(pool) >= total or len(pool) == self.grown):
                self.exhausted = True
                return
            self.grown = len(pool)
            self.wanted += self.n
            if taken:
                yield taken

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
        """Whether the page after those yielded would hold a song: one track not shown (and, with
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


def score_tracks(
    query: Query,
    tracks: Sequence[int],
    snap: Snapshot,
    scorer: Scorer,
    norms: BankNorms,
    va_weight: float,
) -> dict[int, Scored]:
    """Each track's score: the mean over ``CLIPS_PER_TRACK`` spread clips, bank-normalised, minus
    ``va_weight`` x the track's VA distance to the photo (with a bank: z units)."""
    keep = snap.track_clips(tracks, CLIPS_PER_TRACK)
    if not keep:
        return {}
    embs = np.concatenate([c.embeddings for c in keep])
    scores = _unit_scores(scorer.similarity(query.embedding, embs))
    bank = query_bank(scorer)
    out: dict[int, Scored] = {}
    at = 0
    for clips in keep:
        tid, cids = clips.track_id, clips.clip_ids
        s = scores[at : at + len(cids)]
        score = float(s.mean())
        rank = round(score, SCORE_DECIMALS)  # what orders the tracks: z with a bank, else the score
        if bank is not None:
            mu, sd = norms.get(bank, tid, embs[at : at + len(cids)], snap)
            z = (score - mu) / sd - va_weight * va_distance(snap, tid, query.va)
            rank = round(z, SCORE_DECIMALS)
            score = 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))
        out[tid] = Scored(tid, rank, round(score, SCORE_DECIMALS), cids, clips.starts, clips.ends, s)
        at += len(cids)
    return out


def va_distance(snap: Snapshot, track_id: int, photo_va: tuple[float, float]) -> float:
    """Euclidean distance between the track's predicted VA (mean over its clips) and the photo's;
    0 for a track stored without one."""
    info = snap.track_info.get(track_id)
    if info is None or info.valence is None or info.arousal is None:
        return 0.0
    return math.hypot(info.valence - photo_va[0], info.arousal - photo_va[1])


def steer(entry: Scored, photo: np.ndarray, target: np.ndarray, snap: Snapshot) -> Scored:
    """The entry ranked by its score plus the VA distance it gains towards the target."""
    info = snap.track_info.get(entry.track_id)
    if info is None or info.valence is None or info.arousal is None:
        return replace(entry, rank=round(entry.score, SCORE_DECIMALS))
    gain = float(steer_gain(np.array([[info.valence, info.arousal]]), photo, target)[0])
    return replace(entry, rank=round(entry.score + STEER_WEIGHT * gain, SCORE_DECIMALS), gain=gain)


def order_key(entry: Scored, seed: int | None) -> tuple:
    """Best first, ties by track id; with a seed, shuffled inside each score step."""
    if seed is None:
        return (-entry.rank, entry.track_id)
    value = entry.rank if entry.gain is not None else entry.score
    return (-score_step(value), shuffle_key(seed, entry.track_id), entry.track_id)


# -- 6. segments -------------------------------------------------------------------------------------
def segments(image_emb: np.ndarray, entries: list[Scored], seconds: float, snap: Snapshot, scorer: Scorer) -> list[Hit]:
    """Hits with their segment: the best clip of the whole track (every clip scored, not only the
    ranking's sample), or the best window of ``seconds``."""
    scored = all_clip_scores(image_emb, [e.track_id for e in entries], snap, scorer)
    hits: list[Hit] = []
    for e in entries:
        hit = e.hit()
        if e.track_id in scored:
            c, s = scored[e.track_id]
            if seconds > CLIP_SECONDS + 1e-6:
                order = np.lexsort((c.clip_ids, c.starts))
                w = best_window(c.starts[order], c.ends[order], s[order], seconds)
                hit = replace(hit, start=w.start, end=w.end, segment_score=round(w.score, SCORE_DECIMALS))
            else:
                best = best_clip_index(s, c.starts, c.clip_ids)
                hit = replace(hit, start=float(c.starts[best]), end=float(c.ends[best]), clip_id=int(c.clip_ids[best]))
        info = snap.track_info.get(e.track_id)
        if info is not None:
            hit = replace(hit, valence=info.valence, arousal=info.arousal)
        hits.append(replace(hit, rank=e.rank))
    return hits


def all_clip_scores(
    image_emb: np.ndarray, track_ids: Sequence[int], snap: Snapshot, scorer: Scorer
) -> Mapping[int, tuple[TrackClips, np.ndarray]]:
    """Every clip of each track with its predicted similarity in [0, 1]: one predictor call for
    the whole page (one hop onto the model thread, not one per song)."""
    clips = snap.track_clips(track_ids)
    if not clips:
        return {}
    scores = _unit_scores(scorer.similarity(image_emb, np.concatenate([c.embeddings for c in clips])))
    out, at = {}, 0
    for c in clips:
        out[c.track_id] = (c, scores[at : at + len(c.clip_ids)])
        at += len(c.clip_ids)
    return out


def _unit_scores(raw: np.ndarray) -> np.ndarray:
    """Predicted similarities as float64 in [0, 1] (NaN -> 0)."""
    return np.clip(np.nan_to_num(np.asarray(raw, np.float64), nan=0.0), 0.0, 1.0)


def best_clip_index(scores: np.ndarray, starts: np.ndarray, clip_ids: np.ndarray) -> int:
    """Index of the best clip: highest score rounded to ``SCORE_DECIMALS`` (so float noise cannot
    reorder ties), then the earliest start, then the lowest id. Rounding is monotonic, so only
    the clips within one rounding step of the top can tie; Python's ``round`` decides among those."""
    scores = np.asarray(scores, np.float64)
    top = round(float(scores.max()), SCORE_DECIMALS)
    near = np.flatnonzero(scores >= top - 10.0**-SCORE_DECIMALS)
    tied = near[[round(float(scores[i]), SCORE_DECIMALS) == top for i in near]]
    return int(tied[np.lexsort((np.asarray(clip_ids)[tied], np.asarray(starts)[tied]))[0]])
