"""Pydantic request/response models of the HTTP API.

They are the published contract: `/docs` and `/openapi.json` are generated from them, the tests
validate every response body against that schema, and the web page reads these shapes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

_TRACK_EXAMPLE = {
    "id": 3,
    "title": "Elvish Theme",
    "artist": "Wesnoth",
    "album": "The Battle for Wesnoth",
    "duration": 183.2,
    "valence": 0.55,
    "arousal": 0.40,
    "clip_count": 91,
    "license": "GPL-2.0-or-later, from The Battle for Wesnoth",
    "audio_url": "/tracks/3/audio",
    "created_at": "2025-01-31T12:00:00Z",
}


class ErrorResponse(BaseModel):
    """Every 4xx/5xx answer: one human-readable message, optionally the field-level errors."""

    detail: str = Field(description="What went wrong and, where possible, how to fix it.")
    errors: list[dict] | None = Field(
        None, description="Field-level validation errors (422 only), as pydantic reports them."
    )

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"detail": "image: the upload is not a supported image"}]}
    )


class VA(BaseModel):
    """A point in valence-arousal space, both in [0, 1]."""

    valence: float = Field(ge=0.0, le=1.0, description="Pleasantness: 0 negative, 1 positive.")
    arousal: float = Field(ge=0.0, le=1.0, description="Energy: 0 calm, 1 excited.")

    model_config = ConfigDict(json_schema_extra={"examples": [{"valence": 0.61, "arousal": 0.42}]})


class Segment(BaseModel):
    """The best-matching 2-second clip of a track, in seconds from its start."""

    start: float = Field(ge=0.0)
    end: float = Field(ge=0.0)

    model_config = ConfigDict(json_schema_extra={"examples": [{"start": 24.0, "end": 26.0}]})


class TrackOut(BaseModel):
    """A catalogue track with its predicted emotion and where to stream it."""

    id: int
    title: str
    artist: str | None = None
    album: str | None = None
    duration: float = Field(ge=0.0, description="Seconds.")
    valence: float | None = Field(None, description="Track-level predicted valence in [0, 1].")
    arousal: float | None = Field(None, description="Track-level predicted arousal in [0, 1].")
    clip_count: int = Field(ge=0, description="Indexed 2-second clips.")
    license: str | None = Field(None, description="Licence / attribution text, when known.")
    audio_url: str | None = Field(
        None, description="Relative URL of the audio (HTTP Range supported); null if none is stored."
    )
    created_at: datetime | None = None

    model_config = ConfigDict(json_schema_extra={"examples": [_TRACK_EXAMPLE]})


class RecommendResult(BaseModel):
    track: TrackOut
    score: float = Field(
        ge=0.0,
        le=1.0,
        description="How much better the song suits this photo than a typical photo, in [0, 1] (0.5: no better).",
    )
    segment: Segment


class RecommendResponse(BaseModel):
    """Songs for a photo, best first."""

    image: VA = Field(description="The photo's predicted valence and arousal.")
    results: list[RecommendResult]
    model_version: str = Field(description="Model name and checkpoint hash prefix.")
    took_ms: float = Field(ge=0.0, description="Server-side time for this request.")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "image": {"valence": 0.61, "arousal": 0.42},
                    "results": [
                        {
                            "track": _TRACK_EXAMPLE,
                            "score": 0.87,
                            "segment": {"start": 24.0, "end": 26.0},
                        }
                    ],
                    "model_version": "photoscore-default@ab12cd34",
                    "took_ms": 41.2,
                }
            ]
        }
    )


class TrackList(BaseModel):
    """One page of the catalogue."""

    items: list[TrackOut]
    total: int = Field(ge=0, description="Tracks matching the filter, over all pages.")
    offset: int = Field(ge=0)
    limit: int = Field(ge=1)

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [_TRACK_EXAMPLE], "total": 1, "offset": 0, "limit": 20}]}
    )


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"

    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})


class ReadyResponse(BaseModel):
    """Readiness: every check must pass before a load balancer sends traffic."""

    status: Literal["ready", "unavailable"]
    checks: dict[str, bool] = Field(description="model, index and database.")
    detail: str | None = Field(None, description="Why the service is not ready.")
    model_version: str | None = None
    tracks: int = Field(0, ge=0, description="Tracks in this replica's live index.")
    clips: int = Field(0, ge=0, description="Clips in this replica's live index.")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "ready",
                    "checks": {"model": True, "index": True, "database": True},
                    "detail": None,
                    "model_version": "photoscore-default@ab12cd34",
                    "tracks": 12,
                    "clips": 1093,
                },
                {
                    "status": "unavailable",
                    "checks": {"model": True, "index": True, "database": False},
                    "detail": "database: connection refused",
                    "model_version": "photoscore-default@ab12cd34",
                    "tracks": 12,
                    "clips": 1093,
                },
            ]
        }
    )


def error_responses(*codes: int) -> dict[int | str, dict]:
    """The `responses=` entry of a route: each listed status documented with ErrorResponse."""
    return {code: {"model": ErrorResponse, "description": _ERROR_TEXT[code]} for code in codes}


_ERROR_TEXT = {
    400: "Corrupt or empty upload, or a malformed request.",
    401: "Missing or wrong API key (send `Authorization: Bearer <key>` or `X-API-Key`).",
    403: "Writes are disabled because no API key is configured (set PHOTOSCORE_API_KEYS).",
    404: "No such track, or no audio stored for it.",
    413: "Upload, image pixel count or audio duration above the configured limit.",
    415: "Unsupported file type.",
    422: "A missing or invalid field or query parameter, or content that cannot be used.",
    429: "Too many uploads in progress; retry after the `Retry-After` header's seconds.",
    500: "Unexpected server error (a bug: please report it).",
    503: "Database or model temporarily unavailable; retry later.",
}
