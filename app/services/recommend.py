"""Recommendation: photo bytes -> ranked songs, the one path every shell uses.

``Recommender.recommend(image, options)`` answers one page of songs for a photo;
``Recommender.playlist(images, options)`` one song per photo of an album, following its arc;
``Recommender.plan`` is that plan for photos already embedded (a video's scenes). The ranking
itself is ``app.services.ranking``.

Threads: a photo is decoded in a worker thread, embedded on the model thread (micro-batched with
other requests), and ranked in a worker thread; only the similarity predictor's calls hop onto
the model thread (``ModelThreadScorer``), so FAISS searches, table look-ups and SQL never hold up
another request's embedding.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from anyio import to_thread
from sqlalchemy.orm import Session

from app.core.catalogue import segment_va, tracks_by_id
from app.core.live_index import LiveIndex
from app.core.models import Track
from app.core.ranking import Candidate, duplicate_key, normal_artist, path_penalty, plan_playlist, target_of
from app.core.settings import Settings
from app.services.explain import Explanation, explain
from app.services.inference import InferenceWorker, ModelThreadScorer
from app.services.photos import clean_va, decode_photo
from app.services.ranking import Hit, Query, Ranker, Scored, SearchOptions
from model.image import ImageDecodeError


class EmptyCatalogueError(ValueError):
    """There are no songs to choose from yet."""


class PhotoError(ValueError):
    """One photo of several cannot be used: which one, and its decode error."""

    def __init__(self, index: int, error: ImageDecodeError) -> None:
        super().__init__(str(error))
        self.index, self.error = index, error


@dataclass(frozen=True)
class Result:
    """One song as an answer shows it: the track, its hit (score, segment) and why."""

    track: Track
    hit: Hit
    why: Explanation


@dataclass(frozen=True)
class Recommendation:
    """One page of songs for a photo."""

    photo: tuple[float, float]  # the photo's predicted valence, arousal (clipped to [0, 1])
    target: tuple[float, float] | None  # the steered target, None unsteered
    results: list[Result]  # ranked; tracks deleted since the last index sync are left out
    offset: int
    next_offset: int | None  # the next page's offset, None when no later page holds a song
    model_version: str


@dataclass(frozen=True)
class PlaylistOptions:
    """What a playlist may ask for beyond the search options of each photo's candidates."""

    search: SearchOptions = SearchOptions()
    smoothness: float = 1.0  # weight of the VA-jump penalty between consecutive songs
    max_per_artist: int = 0  # over the whole playlist; 0: no cap
    segment_seconds: tuple[float, ...] | None = None  # one per photo (a video's scenes), else the search's
    distinct: bool = True  # no song twice (False: each place may get any of its candidates)


@dataclass(frozen=True)
class Playlist:
    """One song per photo, in the photos' order, following their arc."""

    photos: list[tuple[float, float]]  # each photo's predicted VA
    hits: list[Hit]  # one per photo
    tracks: dict[int, Track]
    segment_va: dict[int, tuple[float, float]]
    total_score: float  # sum of the songs' scores minus smoothness x the VA-jump penalty
    model_version: str
    target: list[tuple[float, float] | None] = field(default_factory=list)  # per photo, None unsteered

    def results(self) -> list[Result | None]:
        """Each photo's song as shown; None where the track was deleted meanwhile."""
        return [
            None
            if hit.track_id not in self.tracks
            else result_of(self.tracks[hit.track_id], hit, photo, target, self.segment_va.get(hit.track_id))
            for hit, photo, target in zip(self.hits, self.photos, self.target, strict=True)
        ]


def result_of(
    track: Track,
    hit: Hit,
    photo: tuple[float, float],
    target: tuple[float, float] | None,
    segment: tuple[float, float] | None,
) -> Result:
    """A hit with its track and why: photo, song, segment and target VA."""
    song = None if track.valence is None or track.arousal is None else (track.valence, track.arousal)
    return Result(track, hit, explain(photo, song, segment, target))


class Recommender:
    """Photo bytes -> songs, for every shell.

    Owns the path from bytes to ranking: decoding in a worker thread, embedding on the model
    thread, ranking in a worker thread (the predictor's calls hop onto the model thread), SQL in
    a worker thread. Image errors surface as ``model.image.ImageDecodeError`` (one photo) or
    ``PhotoError`` (one of several). Cheap to make (one per request): the ranker, which caches
    per track, is the app's.
    """

    def __init__(
        self, ranker: Ranker, worker: InferenceWorker, session_factory: Callable[[], Session], settings: Settings
    ) -> None:
        self.ranker = ranker
        self.live = ranker.live
        self.worker = worker
        self.session_factory = session_factory
        self.settings = settings

    @classmethod
    def ranker_for(cls, live: LiveIndex, worker: InferenceWorker, settings: Settings) -> Ranker:
        """The app's ranker: the predictor's calls run on ``worker``'s model thread."""
        return Ranker(live, ModelThreadScorer(worker), settings.search_k, settings.rank_va_weight)

    @property
    def model_version(self) -> str:
        return str(self.worker.matcher.version)

    @property
    def image_size(self) -> int:
        return int(self.worker.matcher.image_size)

    # -- photos -> queries ------------------------------------------------------------------------
    def decode(self, data: bytes) -> object:
        """Bytes -> network input (raises ``ImageDecodeError``)."""
        return decode_photo(data, self.settings.max_image_pixels, self.image_size)

    async def embed(self, data: bytes) -> Query:
        """One photo as the ranking's query (embedding, clipped predicted VA)."""
        tensor = await to_thread.run_sync(self.decode, data)
        emb, va = await self.worker.embed_image(tensor)
        return Query(emb, clean_va(va))

    async def embed_decoded(self, tensors: Sequence[object]) -> list[Query]:
        """Decoded photos as queries, embedded together (micro-batched)."""
        embedded = await asyncio.gather(*(self.worker.embed_image(t) for t in tensors))
        return [Query(e, clean_va(va)) for e, va in embedded]

    async def embed_many(self, images: Sequence[bytes]) -> list[Query]:
        """Several photos as queries: decoded in order (the first that fails raises
        ``PhotoError`` naming it), then embedded together."""

        def decode_all() -> list[object]:
            tensors = []
            for i, data in enumerate(images):
                try:
                    tensors.append(self.decode(data))
                except ImageDecodeError as exc:
                    raise PhotoError(i, exc) from exc
            return tensors

        return await self.embed_decoded(await to_thread.run_sync(decode_all))

    # -- answers ---------------------------------------------------------------------------------
    async def recommend(self, image: bytes, options: SearchOptions) -> Recommendation:
        """One page of songs for a photo (raises ``ImageDecodeError``; ``ValueError`` past the
        paging cap)."""
        query = await self.embed(image)
        page = await to_thread.run_sync(self.ranker.page, query, options)
        target = target_of(query.va, options.shift) if options.steered else None
        tracks, seg_va = await to_thread.run_sync(self.describe, page.results)
        results = [
            result_of(tracks[h.track_id], h, query.va, target, seg_va.get(h.track_id))
            for h in page.results
            if h.track_id in tracks
        ]
        return Recommendation(query.va, target, results, page.offset, page.next_offset, self.model_version)

    async def playlist(self, images: Sequence[bytes], options: PlaylistOptions) -> Playlist:
        """One song per photo (raises ``PhotoError``, ``EmptyCatalogueError``, ``OptionError``)."""
        return await self.plan(await self.embed_many(images), options)

    async def plan(self, queries: Sequence[Query], options: PlaylistOptions) -> Playlist:
        """One song per query: each query's best ``options.search.n`` songs, then the path through
        them that trades score against VA jumps (``app.core.ranking.plan_playlist``; raises
        ``OptionError`` when the artist cap leaves no path)."""
        if self.live.n_tracks == 0:
            raise EmptyCatalogueError("playlist: the catalogue has no songs yet")
        search = options.search
        photos = [q.va for q in queries]

        def first_pages() -> list[list[Scored]]:
            return [next(self.ranker.rank(q, search), []) for q in queries]

        pools = await to_thread.run_sync(first_pages)
        cands = [[_candidate(self.live, e, search.steered, search.dedupe) for e in pool] for pool in pools]
        if not options.distinct:  # each place its own identity: a song may come back (a video's later scene)
            cands = [[replace(c, key=f"{c.key}@{i}") for c in pool] for i, pool in enumerate(cands)]
        path = await to_thread.run_sync(plan_playlist, cands, photos, options.smoothness, options.max_per_artist)
        picks = [next(e for e in pool if e.track_id == c.track_id) for pool, c in zip(pools, path, strict=True)]
        lengths = options.segment_seconds or (search.segment_seconds,) * len(picks)

        def segments() -> list[Hit]:
            return [self.ranker.segments(q, [p], s)[0] for q, p, s in zip(queries, picks, lengths, strict=True)]

        hits = await to_thread.run_sync(segments)
        tracks, seg_va = await to_thread.run_sync(self.describe, hits)
        return Playlist(
            photos=photos,
            hits=hits,
            tracks=tracks,
            segment_va=seg_va,
            total_score=sum(c.score for c in path) - options.smoothness * path_penalty(path, photos),
            model_version=self.model_version,
            target=[target_of(p, search.shift) if search.steered else None for p in photos],
        )

    def describe(self, hits: Sequence[Hit]) -> tuple[dict[int, Track], dict[int, tuple[float, float]]]:
        """The hits' tracks and their segments' mean VA, in one short session."""
        with self.session_factory() as session:
            tracks = tracks_by_id(session, [h.track_id for h in hits])
            seg = segment_va(session, [(h.track_id, h.start, h.end) for h in hits if h.track_id in tracks])
            return tracks, seg


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
