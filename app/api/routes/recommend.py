"""POST /recommend: songs for a photo."""

from __future__ import annotations

import math
import time
from typing import Annotated

from fastapi import APIRouter, Depends, File, HTTPException, Query, UploadFile, status

from app.api.deps import RecommenderDep, SettingsDep
from app.api.routes.common import StrictFormRoute, read_upload, single_part, track_out
from app.api.schemas import VA, RecommendResponse, RecommendResult, Segment, Shift, Why, error_responses
from app.api.security import ReadAuth
from app.core.models import Track
from app.core.ranking import MAX_SHIFT, MOOD_STEP, NEAR_EQUAL, OptionError, mood_words, parse_moods, total_shift
from app.services.recommend import MAX_RANKED, Hit, SearchOptions
from model.image import ImageDecodeError

router = APIRouter(tags=["recommend"], route_class=StrictFormRoute)  # file fields must be files

SUPPORTED_IMAGES = "JPEG, PNG, WebP, GIF (first frame), BMP or TIFF"

DESCRIPTION = f"""
Upload a photo as the multipart field **`image`** ({SUPPORTED_IMAGES}). The photo is embedded
by the CDCML image branch; FAISS returns the nearest 2-second music clips (`search_k` of them,
widened until they cover `n` tracks), whose tracks are the candidates; the learned similarity
predictor scores the candidates' clips, a track's score is the mean over its clips relative to
how well the track suits the model's bank of typical photos, its segment is its best clip, and
the `n` best tracks come back, best first.

`score` in [0, 1]: 0.5 means the song suits this photo no better than a typical photo, near 1
far better (without a query bank in the checkpoint: the predicted similarity); `segment` is
where in the track the best clip lies; `image` is the photo's predicted valence and arousal.
The same photo and catalogue always give the same answer (ties are broken by track id).

Options (all query parameters):

* **Steering**: `valence_shift`, `arousal_shift` in [-0.5, 0.5] and/or `mood` words (`happier`,
  `sadder`, `calmer`, `more energetic`; each moves the target 0.25; opposites are refused). The
  target is the photo's VA plus the shift; the candidates are widened by the songs whose VA lies
  nearest the target, and each song is ranked by its score plus 2 × how much closer it is to the
  target than to the photo. No shift: exactly the plain ranking.
* **Variety**: one entry per track; `max_per_artist` (default 2, 0 = no cap); `dedupe` (default
  on) keeps one of each normalised title + artist; `offset` pages through the same ranking
  (`next_offset` is the next page, given only when it holds a song; pages never repeat a song;
  the first {MAX_RANKED} songs can be paged through: `offset + n` beyond that is a 422); `seed` reshuffles songs whose
  scores fall in the same 0.02-wide step, deterministically per seed.
* **Segment**: `segment_seconds` (2–60): the best run of consecutive clips of at most that length
  (mean clip score), on clip boundaries, inside the song; a shorter song is returned whole.

Each result carries `why`: photo and song VA, their distance, the segment's VA and plain words.

Examples:

    curl -F image=@beach.jpg 'http://localhost:8000/recommend?n=5'
    curl -F image=@beach.jpg 'http://localhost:8000/recommend?n=5&mood=calmer&segment_seconds=15'
    curl -F image=@beach.jpg 'http://localhost:8000/recommend?n=5&offset=5'
"""


def image_error(exc: ImageDecodeError) -> HTTPException:
    """The 4xx for an image that cannot be used, naming the setting or the formats to fix it."""
    if exc.too_large:
        return HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"image: {exc} (PHOTOSCORE_MAX_IMAGE_PIXELS)")
    if str(exc).startswith("not a supported image"):
        return HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, f"image: not a supported image; send {SUPPORTED_IMAGES}"
        )
    return HTTPException(status.HTTP_400_BAD_REQUEST, f"image: {exc}")


def _unit(x: float) -> float:
    return min(1.0, max(0.0, float(x)))


def _va(pair: tuple[float, float] | None) -> VA | None:
    return None if pair is None else VA(valence=round(_unit(pair[0]), 4), arousal=round(_unit(pair[1]), 4))


def explain(
    photo: tuple[float, float],
    song: tuple[float, float] | None,
    segment: tuple[float, float] | None,
    target: tuple[float, float] | None,
) -> Why:
    """The `why` of one result: both moods as numbers and words, and how far apart they are."""
    dist = None if song is None else round(math.dist(photo, song), 4)
    photo_words = mood_words(*photo)
    song_words = mood_words(*song) if song is not None else "unknown"
    summary = f"photo {photo_words} ({photo[0]:.2f}, {photo[1]:.2f})"
    if song is not None:
        summary += f" · song {song_words} ({song[0]:.2f}, {song[1]:.2f}), {dist:.2f} apart"
    if target is not None:
        summary += f" · steered towards ({target[0]:.2f}, {target[1]:.2f})"
    return Why(
        photo=_va(photo),
        song=_va(song),
        distance=dist,
        segment=_va(segment),
        target=_va(target),
        photo_words=photo_words,
        song_words=song_words,
        segment_words=mood_words(*segment) if segment is not None else "unknown",
        summary=summary,
    )


def result_row(
    track: Track,
    hit: Hit,
    photo: tuple[float, float],
    target: tuple[float, float] | None,
    segment: tuple[float, float] | None,
) -> RecommendResult:
    """One ranked song as the response shows it."""
    song = None if track.valence is None or track.arousal is None else (track.valence, track.arousal)
    return RecommendResult(
        track=track_out(track),
        score=hit.score,
        segment=Segment(start=round(hit.start, 3), end=round(hit.end, 3)),
        why=explain(photo, song, segment, target),
    )


def search_options(
    n: int,
    offset: int,
    valence_shift: float,
    arousal_shift: float,
    mood: list[str] | None,
    max_per_artist: int,
    dedupe: bool,
    seed: int | None,
    segment_seconds: float,
) -> SearchOptions:
    """Validated options; bad words or shifts -> 422 with one clear sentence."""
    if offset % n:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"query parameter 'offset': {offset} is not a multiple of n={n}; pages start at 0, n, 2n, ...",
        )
    if offset + n > MAX_RANKED:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"query parameter 'offset': offset + n = {offset + n} is past the paging cap; the first "
            f"{MAX_RANKED} songs of a ranking can be paged through",
        )
    try:
        shift = total_shift(valence_shift, arousal_shift, parse_moods(mood))
    except OptionError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    return SearchOptions(
        n=n,
        offset=offset,
        shift=shift,
        max_per_artist=max_per_artist,
        dedupe=dedupe,
        seed=seed,
        segment_seconds=segment_seconds,
    )


# The options both routes take, documented once (OpenAPI shows description and examples).
OffsetQ = Annotated[
    int,
    Query(
        ge=0,
        le=1000,
        description="Where the page starts in the ranking: 0, n, 2n, ... (`next_offset` gives the next, "
        f"only when that page holds a song). Pages never repeat a song. Paging cap: offset + n <= {MAX_RANKED} "
        "(422 beyond).",
        examples=[10],
    ),
]
ValenceShiftQ = Annotated[
    float,
    Query(ge=-MAX_SHIFT, le=MAX_SHIFT, description="Move the mood target along valence (+ happier).", examples=[0.2]),
]
ArousalShiftQ = Annotated[
    float,
    Query(
        ge=-MAX_SHIFT,
        le=MAX_SHIFT,
        description="Move the mood target along arousal (+ more energetic).",
        examples=[-0.2],
    ),
]
MoodQ = Annotated[
    list[str] | None,
    Query(
        description="Mood words, repeated or comma separated: happier, sadder, calmer, more energetic "
        f"(each moves the target by {MOOD_STEP}; opposites are refused; added to the shifts, clipped to ±{MAX_SHIFT}).",
        examples=[["calmer", "happier"]],
    ),
]
MaxPerArtistQ = Annotated[
    int, Query(ge=0, le=100, description="At most this many songs by one artist (0: no cap).", examples=[2])
]
DedupeQ = Annotated[
    bool,
    Query(description='Leave out near-duplicates: the same title and artist once normalised ("Numb (Live)" = "Numb").'),
]
SeedQ = Annotated[
    int | None,
    Query(
        ge=0,
        le=2**31 - 1,
        description=f"Reshuffle songs whose scores share a {NEAR_EQUAL}-wide step, deterministically per seed.",
        examples=[7],
    ),
]
SegmentQ = Annotated[
    float,
    Query(
        ge=2.0,
        le=60.0,
        description="Segment length in seconds: the best run of consecutive clips of (at most) this length.",
        examples=[15],
    ),
]


@router.post(
    "/recommend",
    response_model=RecommendResponse,
    summary="Recommend songs for a photo",
    description=DESCRIPTION,
    dependencies=[ReadAuth, Depends(single_part("image"))],  # two photos: refuse, never pick one
    responses=error_responses(400, 401, 413, 415, 422, 503),
)
async def recommend(
    image: Annotated[UploadFile, File(description=f"The photo: {SUPPORTED_IMAGES}.")],
    settings: SettingsDep,
    recommender: RecommenderDep,
    n: Annotated[int, Query(ge=1, le=100, description="How many songs to return.")] = 10,
    offset: OffsetQ = 0,
    valence_shift: ValenceShiftQ = 0.0,
    arousal_shift: ArousalShiftQ = 0.0,
    mood: MoodQ = None,
    max_per_artist: MaxPerArtistQ = 2,
    dedupe: DedupeQ = True,
    seed: SeedQ = None,
    segment_seconds: SegmentQ = 2.0,
) -> RecommendResponse:
    started = time.perf_counter()
    options = search_options(
        n, offset, valence_shift, arousal_shift, mood, max_per_artist, dedupe, seed, segment_seconds
    )
    data = await read_upload(image, "image", int(settings.max_upload_mb * 1e6))
    try:
        found = await recommender.recommend(data, options)
    except ImageDecodeError as exc:
        raise image_error(exc) from exc
    return RecommendResponse(
        image=VA(valence=found.photo[0], arousal=found.photo[1]),
        target=_va(found.target),
        shift=Shift(valence=options.shift[0], arousal=options.shift[1]),
        offset=offset,
        next_offset=offset + n if found.more else None,
        results=[
            result_row(found.tracks[h.track_id], h, found.photo, found.target, found.segment_va.get(h.track_id))
            for h in found.hits
        ],
        model_version=found.model_version,
        took_ms=round((time.perf_counter() - started) * 1000.0, 2),
    )
