"""POST /playlist: one song per photo of an album, following its emotional arc."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, File, HTTPException, Query, UploadFile, status
from starlette.concurrency import run_in_threadpool

from app.api.deps import RecommenderDep, SettingsDep
from app.api.routes.common import StrictFormRoute, read_upload
from app.api.routes.recommend import (
    SUPPORTED_IMAGES,
    ArousalShiftQ,
    DedupeQ,
    MaxPerArtistQ,
    MoodQ,
    SeedQ,
    SegmentQ,
    ValenceShiftQ,
    image_error,
    result_row,
    search_options,
)
from app.api.schemas import VA, PlaylistEntry, PlaylistResponse, error_responses
from app.api.security import ReadAuth
from app.core.ranking import OptionError, target_of
from model.image import ImageDecodeError

router = APIRouter(tags=["recommend"], route_class=StrictFormRoute)  # file fields must be files

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
at the photo it suits best where that still leaves every photo a song, and the pass runs again;
the request is refused only when no playlist of different songs exists among the candidates.
`max_per_artist` caps songs per artist over the whole playlist (0, the default here: no cap).

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
    recommender: RecommenderDep,
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
    max_bytes = int(settings.max_upload_mb * 1e6)
    tensors = []
    for i, upload in enumerate(images):
        try:
            data = await read_upload(upload, "image", max_bytes)
            try:
                tensors.append(await run_in_threadpool(recommender.decode, data))
            except ImageDecodeError as exc:
                raise image_error(exc) from exc
        except HTTPException as exc:
            raise _named(exc, i, upload.filename) from exc
    embedded = await recommender.embed_decoded(tensors)
    embs = [e for e, _ in embedded]
    photos = [va for _, va in embedded]
    if recommender.live.n_tracks == 0:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "playlist: the catalogue has no songs yet")
    try:
        plan = await recommender.playlist(embs, photos, options, smoothness, max_per_artist)
    except OptionError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    entries = []
    for i, (hit, photo) in enumerate(zip(plan.hits, photos, strict=True)):
        track = plan.tracks.get(hit.track_id)
        if track is None:
            continue
        target = target_of(photo, options.shift) if options.steered else None
        r = result_row(track, hit, photo, target, plan.segment_va.get(hit.track_id))
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
    if len(entries) != len(images):
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "playlist: a chosen song was deleted meanwhile; retry")
    return PlaylistResponse(
        entries=entries,
        total_duration=round(sum(e.segment.end - e.segment.start for e in entries), 3),
        total_score=round(plan.total_score, 6),
        model_version=plan.model_version,
        took_ms=round((time.perf_counter() - started) * 1000.0, 2),
    )
