"""POST /playlist: one song per photo of an album, following its emotional arc."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, File, HTTPException, Query, UploadFile, status
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.ranking import Candidate, OptionError, duplicate_key, normal_artist, plan_playlist, target_of
from app.routes.common import read_upload
from app.routes.deps import LiveIndexDep, SessionDep, SettingsDep, WorkerDep
from app.routes.recommend import (
    SUPPORTED_IMAGES,
    ArousalShiftQ,
    DedupeQ,
    MaxPerArtistQ,
    MoodQ,
    SeedQ,
    SegmentQ,
    ValenceShiftQ,
    clean_va,
    decode_image,
    results_for,
    search_options,
)
from app.schemas import VA, PlaylistEntry, PlaylistResponse, error_responses
from app.search import Hit, LiveIndex, Scored, SearchOptions
from app.security import ReadAuth

router = APIRouter(tags=["recommend"])

MIN_PHOTOS = 2
EXTRA_CANDIDATES = 10  # candidates per photo beyond the number of photos (room for "no song twice")
MAX_CANDIDATES = 60

DESCRIPTION = f"""
Upload the photos of an album or slideshow **in order** as repeated multipart fields
**`images`** ({SUPPORTED_IMAGES}; 2 to `PHOTOSCORE_MAX_PLAYLIST_PHOTOS`, default 50). Every
photo gets one song, no song twice (near-duplicates count as the same song when `dedupe` is on),
and the sequence follows the photos' emotional arc while avoiding large mood jumps between
consecutive songs where the photos allow it.

How: each photo's candidates are its best songs under the same steering and variety options as
`/recommend` (as many as there are photos plus {EXTRA_CANDIDATES}); a Viterbi pass over them
maximises the sum of match scores minus `smoothness` times each transition's valence-arousal
jump beyond the jump between the two photos themselves. A song the best path uses twice stays
at the photo it suits best and the pass runs again. `max_per_artist` caps songs per artist over
the whole playlist (0, the default here: no cap).

One photo that cannot be used fails the whole request with a 4xx naming it (index and file
name) and why; nothing is stored.

Example:

    curl -F images=@1.jpg -F images=@2.jpg -F images=@3.jpg \\
        'http://localhost:8000/playlist?segment_seconds=10&mood=calmer'
"""


def _named(exc: HTTPException, index: int, name: str | None) -> HTTPException:
    """The same 4xx, its message saying which photo."""
    detail = str(exc.detail)
    if detail.startswith("image: "):
        detail = detail[len("image: ") :]
    elif detail.startswith("images: "):
        detail = detail[len("images: ") :]
    label = f"images[{index}]" + (f" ({name!r})" if name else "")
    return HTTPException(exc.status_code, f"{label}: {detail}")


def _candidates(
    live: LiveIndex,
    matcher: Any,
    embs: list[np.ndarray],
    vas: list[tuple[float, float]],
    options: SearchOptions,
    k: int,
) -> list[list[Scored]]:
    """Each photo's best ``count`` songs under the options (runs on the model thread)."""
    return [live.ranked(matcher, e, va, options, k) for e, va in zip(embs, vas, strict=True)]


def _segments(live: LiveIndex, matcher: Any, embs: list[np.ndarray], picks: list[Scored], seconds: float) -> list[Hit]:
    return [live.segments(matcher, e, [p], seconds)[0] for e, p in zip(embs, picks, strict=True)]


@router.post(
    "/playlist",
    response_model=PlaylistResponse,
    summary="A playlist for an album: one song per photo",
    description=DESCRIPTION,
    dependencies=[ReadAuth],
    responses=error_responses(400, 401, 413, 415, 422, 503),
)
async def playlist(
    images: Annotated[
        list[UploadFile], File(description=f"The photos in order (repeat the field): {SUPPORTED_IMAGES}.")
    ],
    settings: SettingsDep,
    worker: WorkerDep,
    live: LiveIndexDep,
    session: SessionDep,
    valence_shift: ValenceShiftQ = 0.0,
    arousal_shift: ArousalShiftQ = 0.0,
    mood: MoodQ = None,
    max_per_artist: MaxPerArtistQ = 0,
    dedupe: DedupeQ = True,
    seed: SeedQ = None,
    segment_seconds: SegmentQ = 2.0,
    smoothness: Annotated[
        float,
        Query(
            ge=0.0,
            le=10.0,
            description="Weight of the VA-jump penalty between consecutive songs (0: best match per photo only).",
            examples=[1.0],
        ),
    ] = 1.0,
) -> PlaylistResponse:
    started = time.perf_counter()
    limit = settings.max_playlist_photos
    if not MIN_PHOTOS <= len(images) <= limit:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"images: {len(images)} photo{'s' if len(images) != 1 else ''} sent; send {MIN_PHOTOS} to {limit} "
            "(PHOTOSCORE_MAX_PLAYLIST_PHOTOS)",
        )
    count = min(MAX_CANDIDATES, len(images) + EXTRA_CANDIDATES)
    options = search_options(count, 0, valence_shift, arousal_shift, mood, 0, dedupe, seed, segment_seconds)
    matcher = worker.matcher
    max_bytes = int(settings.max_upload_mb * 1e6)
    tensors = []
    for i, upload in enumerate(images):
        try:
            data = await read_upload(upload, "image", max_bytes)
            tensors.append(
                await run_in_threadpool(decode_image, data, settings.max_image_pixels, int(matcher.image_size))
            )
        except HTTPException as exc:
            raise _named(exc, i, upload.filename) from exc
    embedded = await asyncio.gather(*(worker.embed_image(t) for t in tensors))  # micro-batched together
    embs = [e for e, _ in embedded]
    photos = [clean_va(va) for _, va in embedded]
    if live.n_tracks == 0:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "playlist: the catalogue has no songs yet")
    pools = await worker.run(_candidates, live, matcher, embs, photos, options, settings.search_k)
    cands = [[_candidate(live, e, options.steered) for e in pool] for pool in pools]
    try:
        path = await run_in_threadpool(plan_playlist, cands, photos, smoothness, max_per_artist)
    except OptionError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    picks = [next(e for e in pool if e.track_id == c.track_id) for pool, c in zip(pools, path, strict=True)]
    hits = await worker.run(_segments, live, matcher, embs, picks, segment_seconds)
    total_score = sum(c.score for c in path) - smoothness * _penalty(path, photos)
    entries = await run_in_threadpool(_entries, session, hits, photos, options, images)
    if len(entries) != len(images):
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "playlist: a chosen song was deleted meanwhile; retry")
    return PlaylistResponse(
        entries=entries,
        total_duration=round(sum(e.segment.end - e.segment.start for e in entries), 3),
        total_score=round(total_score, 6),
        model_version=str(matcher.version),
        took_ms=round((time.perf_counter() - started) * 1000.0, 2),
    )


def _candidate(live: LiveIndex, entry: Scored, steered: bool) -> Candidate:
    info = live.track_info.get(entry.track_id)
    valence = 0.5 if info is None or info.valence is None else info.valence
    arousal = 0.5 if info is None or info.arousal is None else info.arousal
    key = duplicate_key(info.title, info.artist) if info is not None else f"#{entry.track_id}"
    return Candidate(
        track_id=entry.track_id,
        score=entry.rank if steered else entry.score,
        valence=valence,
        arousal=arousal,
        key=key,
        artist=normal_artist(info.artist) if info is not None else "",
    )


def _penalty(path: list[Candidate], photos: list[tuple[float, float]]) -> float:
    total = 0.0
    for i in range(1, len(path)):
        jump = float(np.hypot(path[i].valence - path[i - 1].valence, path[i].arousal - path[i - 1].arousal))
        allowance = float(np.hypot(photos[i][0] - photos[i - 1][0], photos[i][1] - photos[i - 1][1]))
        total += max(0.0, jump - allowance)
    return total


def _entries(
    session: Session,
    hits: list[Hit],
    photos: list[tuple[float, float]],
    options: SearchOptions,
    images: list[UploadFile],
) -> list[PlaylistEntry]:
    entries = []
    for i, (hit, photo) in enumerate(zip(hits, photos, strict=True)):
        target = target_of(photo, options.shift) if options.steered else None
        rows = results_for(session, [hit], photo, target)
        if not rows:
            continue
        r = rows[0]
        entries.append(
            PlaylistEntry(
                index=i,
                filename=images[i].filename,
                image=VA(valence=photo[0], arousal=photo[1]),
                track=r.track,
                score=r.score,
                segment=r.segment,
                why=r.why,
            )
        )
    return entries
