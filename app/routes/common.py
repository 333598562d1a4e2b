"""Helpers shared by the routes: ORM -> response model, upload reading, text cleaning."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import HTTPException, UploadFile, status

from app.models import Track
from app.schemas import TrackOut
from app.text import clean_text

__all__ = ["audio_url", "clean_text", "read_upload", "track_out"]

_CHUNK = 1 << 20


def audio_url(track: Track) -> str | None:
    return f"/tracks/{track.id}/audio" if (track.audio_key or track.source) else None


def track_out(track: Track) -> TrackOut:
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
        audio_url=audio_url(track),
        created_at=_aware(track.created_at),
    )


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite returns CURRENT_TIMESTAMP (UTC) without a zone; say so explicitly."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


def _unit(value: float | None) -> float | None:
    return None if value is None else min(1.0, max(0.0, float(value)))


async def read_upload(upload: UploadFile, field: str, limit_bytes: int) -> bytes:
    """The whole upload, refusing anything over `limit_bytes` (also guarded by the middleware)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await upload.read(_CHUNK):
        size += len(chunk)
        if size > limit_bytes:
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE,
                f"{field}: the upload exceeds the limit of {limit_bytes / 1e6:g} MB (PHOTOSCORE_MAX_UPLOAD_MB)",
            )
        chunks.append(chunk)
    data = b"".join(chunks)
    if not data:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"{field}: the uploaded file is empty")
    return data
