"""POST /recommend: songs for a photo."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, File, UploadFile

from app.api.deps import RecommenderDep, SettingsDep
from app.api.errors import decode_error
from app.api.forms import StrictFormRoute, read_upload, single_part
from app.api.params import (
    NQ,
    ArousalShiftQ,
    DedupeQ,
    MaxPerArtistQ,
    MoodQ,
    OffsetQ,
    SeedQ,
    SegmentQ,
    ValenceShiftQ,
    search_options,
)
from app.api.responses import result_row, va_out
from app.api.schemas import VA, RecommendResponse, Shift, error_responses
from app.api.security import ReadAuth
from app.services.ranking import MAX_RANKED
from model.image import SUPPORTED_IMAGES, ImageDecodeError

router = APIRouter(tags=["recommend"], route_class=StrictFormRoute)  # file fields must be files

DESCRIPTION = f"""
Upload a photo as the multipart field **`image`** ({SUPPORTED_IMAGES}). The photo is embedded
by the CDCML image branch; FAISS returns the nearest 2-second music clips (`search_k` of them,
widened until they cover `n` tracks), whose tracks are the candidates; the learned similarity
predictor scores the candidates' clips, a track's score is the mean over its clips relative to
how well the track suits the model's bank of typical photos, less the distance between the
track's and the photo's predicted valence-arousal, its segment is its best clip, and the `n`
best tracks come back, best first.

`score` in [0, 1]: 0.5 means the song suits this photo no better than a typical photo (at zero
VA distance), near 1 far better (without a query bank in the checkpoint: the predicted
similarity); `segment` is
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
    n: NQ = 10,
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
        raise decode_error(exc, "image") from exc
    return RecommendResponse(
        image=VA(valence=found.photo[0], arousal=found.photo[1]),
        target=va_out(found.target),
        shift=Shift(valence=options.shift[0], arousal=options.shift[1]),
        offset=found.offset,
        next_offset=found.next_offset,
        results=[result_row(r) for r in found.results],
        model_version=found.model_version,
        took_ms=round((time.perf_counter() - started) * 1000.0, 2),
    )
