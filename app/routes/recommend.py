"""POST /recommend: songs for a photo."""

from __future__ import annotations

import time
from typing import Annotated

import numpy as np
import torch
from fastapi import APIRouter, Depends, File, HTTPException, Query, UploadFile, status
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.models import Track
from app.routes.common import read_upload, single_part, track_out
from app.routes.deps import LiveIndexDep, SessionDep, SettingsDep, WorkerDep
from app.schemas import VA, RecommendResponse, RecommendResult, Segment, error_responses
from app.security import ReadAuth
from model.image import ImageDecodeError, image_tensor, open_image

router = APIRouter(tags=["recommend"])

SUPPORTED_IMAGES = "JPEG, PNG, WebP, GIF (first frame), BMP or TIFF"
_SPARE = 5  # extra hits asked for, in case a track was deleted since the last index sync

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

Example:

    curl -F image=@beach.jpg 'http://localhost:8000/recommend?n=5'
"""


def decode_image(data: bytes, max_pixels: int, size: int) -> torch.Tensor:
    """Bytes -> network input; raises HTTPException with the right 4xx for bad images.

    JPEGs decode in draft mode (DCT scaling to no less than ``size``): several times faster for
    camera photos, and the very pixels training cached (``model.prepare`` decodes the same way).
    """
    try:
        img = open_image(data, max_pixels=max_pixels, draft_size=size)
    except ImageDecodeError as exc:
        if exc.too_large:
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE,
                f"image: {exc} (PHOTOSCORE_MAX_IMAGE_PIXELS)",
            ) from exc
        if str(exc).startswith("not a supported image"):
            raise HTTPException(
                status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                f"image: not a supported image; send {SUPPORTED_IMAGES}",
            ) from exc
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"image: {exc}") from exc
    return image_tensor(img, size)


def load_tracks(session: Session, ids: list[int]) -> dict[int, Track]:
    if not ids:
        return {}
    return {t.id: t for t in session.scalars(select(Track).where(Track.id.in_(ids)))}


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
    worker: WorkerDep,
    live: LiveIndexDep,
    session: SessionDep,
    n: Annotated[int, Query(ge=1, le=100, description="How many songs to return.")] = 10,
) -> RecommendResponse:
    started = time.perf_counter()
    data = await read_upload(image, "image", int(settings.max_upload_mb * 1e6))
    matcher = worker.matcher
    tensor = await run_in_threadpool(decode_image, data, settings.max_image_pixels, int(matcher.image_size))
    emb, va = await worker.embed_image(tensor)
    hits = await worker.run(live.recommend, matcher, emb, n + _SPARE, settings.search_k)
    tracks = await run_in_threadpool(load_tracks, session, [h.track_id for h in hits])
    results = [
        RecommendResult(
            track=track_out(tracks[h.track_id]),
            score=h.score,
            segment=Segment(start=round(h.start, 3), end=round(h.end, 3)),
        )
        for h in hits
        if h.track_id in tracks
    ][:n]
    va = np.clip(np.nan_to_num(np.asarray(va, np.float64), nan=0.5), 0.0, 1.0)
    return RecommendResponse(
        image=VA(valence=float(va[0]), arousal=float(va[1])),
        results=results,
        model_version=str(matcher.version),
        took_ms=round((time.perf_counter() - started) * 1000.0, 2),
    )
