"""Service results -> response models: tracks, ranked songs and their `why`, export downloads."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import Response

from app.api.schemas import VA, RecommendResult, Segment, TrackOut, Why
from app.core.catalogue import source_missing
from app.core.models import Track
from app.services.explain import Explanation
from app.services.playlist_export import FORMATS, ExportFormat, Plan, render
from app.services.recommend import Result

DOWNLOAD_NAME = "photoscore-album"


def audio_url(track: Track, missing: bool) -> str | None:
    """Where to stream the track; None when no audio is stored or its library file is gone."""
    if not (track.audio_key or track.source) or missing:
        return None
    return f"/tracks/{track.id}/audio"


def track_out(track: Track) -> TrackOut:
    missing = source_missing(track)  # one look at the file system per track
    return TrackOut(
        id=track.id,
        title=track.title,
        artist=track.artist,
        album=track.album,
        duration=max(0.0, float(track.duration or 0.0)),
        valence=_unit(track.valence),
        arousal=_unit(track.arousal),
        clip_count=int(track.clip_count or 0),
        license=track.license,
        audio_url=audio_url(track, missing),
        audio_missing=missing,
        created_at=_aware(track.created_at),
    )


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite returns CURRENT_TIMESTAMP (UTC) without a zone; say so explicitly."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


def _clip(value: float) -> float:
    return min(1.0, max(0.0, float(value)))


def _unit(value: float | None) -> float | None:
    return None if value is None else _clip(value)


def va_out(pair: tuple[float, float] | None) -> VA | None:
    """A VA point as shown: clipped to [0, 1], rounded to 4 decimals."""
    return None if pair is None else VA(valence=round(_clip(pair[0]), 4), arousal=round(_clip(pair[1]), 4))


def why_out(why: Explanation) -> Why:
    """The explanation with its VA points as shown (clipped, rounded)."""
    points = {name: va_out(getattr(why, name)) for name in ("photo", "song", "segment", "target")}
    words = {name: getattr(why, name) for name in ("photo_words", "song_words", "segment_words", "summary")}
    return Why.model_validate({**points, **words, "distance": why.distance})


def result_row(result: Result) -> RecommendResult:
    """One ranked song as the response shows it."""
    hit = result.hit
    return RecommendResult(
        track=track_out(result.track),
        score=hit.score,
        segment=Segment(start=round(hit.start, 3), end=round(hit.end, 3)),
        why=why_out(result.why),
    )


def download(plan: Plan, fmt: ExportFormat) -> Response:
    """One export as an attachment with its media type and file name."""
    spec = FORMATS[fmt]
    return Response(
        render(plan, fmt),
        media_type=spec.media_type,
        headers={"Content-Disposition": f'attachment; filename="{DOWNLOAD_NAME}.{spec.extension}"'},
    )
