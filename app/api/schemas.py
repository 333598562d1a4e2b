"""Pydantic request/response models of the HTTP API.

They are the published contract: `/docs` and `/openapi.json` are generated from them, the tests
validate every response body against that schema, and the web page reads these shapes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

_TRACK_EXAMPLE: JsonDict = {
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
    """Where in the track to play, in seconds from its start (2-second clip boundaries)."""

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
    audio_missing: bool = Field(
        False,
        description="A library track whose audio file has been removed: it is not recommended and has no "
        "audio_url until the file is back (or the track is deleted).",
    )
    created_at: datetime | None = None

    model_config = ConfigDict(json_schema_extra={"examples": [_TRACK_EXAMPLE]})


class Shift(BaseModel):
    """How far the mood target was moved from the photo (explicit shifts plus mood words)."""

    valence: float = Field(ge=-0.5, le=0.5)
    arousal: float = Field(ge=-0.5, le=0.5)

    model_config = ConfigDict(json_schema_extra={"examples": [{"valence": 0.25, "arousal": -0.25}]})


_CUE_SONG_EXAMPLE: JsonDict = {
    "id": 3,
    "title": "Elvish Theme",
    "artist": "Wesnoth",
    "album": "The Battle for Wesnoth",
    "license": "GPL-2.0-or-later, from The Battle for Wesnoth",
    "url": "http://localhost:8000/tracks/3/audio",
    "duration": 183.2,
}
_WHY_EXAMPLE: JsonDict = {
    "photo": {"valence": 0.61, "arousal": 0.42},
    "song": {"valence": 0.57, "arousal": 0.45},
    "distance": 0.05,
    "segment": {"valence": 0.6, "arousal": 0.43},
    "target": None,
    "photo_words": "relaxed · gentle",
    "song_words": "relaxed · gentle",
    "segment_words": "relaxed · gentle",
    "summary": "photo relaxed · gentle (0.61, 0.42) · song relaxed · gentle (0.57, 0.45), 0.05 apart",
}
_CUE_EXAMPLE: JsonDict = {
    "index": 0,
    "photo": {"filename": "beach.jpg", "valence": 0.61, "arousal": 0.42},
    "song": _CUE_SONG_EXAMPLE,
    "segment": {"start": 24.0, "end": 34.0},
    "timeline": {"start": 0.0, "end": 10.0},
    "score": 0.87,
    "why": _WHY_EXAMPLE,
}


class Why(BaseModel):
    """Why this song: both moods as valence-arousal points and plain words, and their distance.

    Words come from a fixed lexicon of the VA plane: the quadrant (pleasant/unpleasant x
    energetic/calm), mild or strong by how far the point lies from the centre, "neutral · even"
    near it.
    """

    photo: VA = Field(description="The photo's predicted valence and arousal.")
    song: VA | None = Field(description="The song's predicted VA (mean over its clips).")
    distance: float | None = Field(None, ge=0.0, description="Euclidean distance between photo and song VA.")
    segment: VA | None = Field(None, description="Mean predicted VA of the clips inside the segment.")
    target: VA | None = Field(None, description="The steered mood target (photo VA + shift); null without a shift.")
    photo_words: str = Field(description="Plain words for the photo's mood.", examples=["calm · content"])
    song_words: str = Field(description="Plain words for the song's mood.", examples=["relaxed · gentle"])
    segment_words: str = Field(description="Plain words for the segment's mood.", examples=["relaxed · gentle"])
    summary: str = Field(description="All of the above in one line, as the page shows it.")

    model_config = ConfigDict(json_schema_extra={"examples": [_WHY_EXAMPLE]})


class RecommendResult(BaseModel):
    track: TrackOut
    score: float = Field(
        ge=0.0,
        le=1.0,
        description=(
            "How much better the song suits this photo than a typical photo, less their VA distance,"
            " in [0, 1] (0.5: no better)."
        ),
    )
    segment: Segment = Field(
        description="The best window of `segment_seconds` (whole clips, inside the song; the whole song if shorter)."
    )
    why: Why


class RecommendResponse(BaseModel):
    """Songs for a photo, best first."""

    image: VA = Field(description="The photo's predicted valence and arousal.")
    target: VA | None = Field(None, description="The mood target the songs were steered towards; null without a shift.")
    shift: Shift = Field(description="The total shift applied (explicit shifts plus mood words, clipped).")
    offset: int = Field(0, ge=0, description="Results of this ranking skipped before this page.")
    next_offset: int | None = Field(
        None, ge=0, description='`offset` for the next page ("more songs"); null when this page was not full.'
    )
    results: list[RecommendResult]
    model_version: str = Field(description="Model name and checkpoint hash prefix.")
    took_ms: float = Field(ge=0.0, description="Server-side time for this request.")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "image": {"valence": 0.61, "arousal": 0.42},
                    "target": None,
                    "shift": {"valence": 0.0, "arousal": 0.0},
                    "offset": 0,
                    "next_offset": 1,
                    "results": [
                        {
                            "track": _TRACK_EXAMPLE,
                            "score": 0.87,
                            "segment": {"start": 24.0, "end": 26.0},
                            "why": _WHY_EXAMPLE,
                        }
                    ],
                    "model_version": "photoscore-default@ab12cd34",
                    "took_ms": 41.2,
                }
            ]
        }
    )


class PlaylistEntry(BaseModel):
    """One photo of the album and the song it gets."""

    index: int = Field(ge=0, description="The photo's position in the upload (0-based).")
    filename: str | None = Field(None, description="The photo's file name as uploaded.")
    image: VA = Field(description="The photo's predicted valence and arousal.")
    track: TrackOut
    score: float = Field(ge=0.0, le=1.0, description="How well the song suits this photo (as in /recommend).")
    segment: Segment
    why: Why


class PlaylistResponse(BaseModel):
    """One song per photo, in the photos' order, no song twice, with smooth mood transitions."""

    entries: list[PlaylistEntry]
    total_duration: float = Field(ge=0.0, description="Seconds: the segments played one after another.")
    total_score: float = Field(description="Match scores minus transition penalties: what the DP maximised.")
    model_version: str
    took_ms: float = Field(ge=0.0)

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "entries": [
                        {
                            "index": 0,
                            "filename": "beach.jpg",
                            "image": {"valence": 0.61, "arousal": 0.42},
                            "track": _TRACK_EXAMPLE,
                            "score": 0.87,
                            "segment": {"start": 24.0, "end": 34.0},
                            "why": _WHY_EXAMPLE,
                        }
                    ],
                    "total_duration": 10.0,
                    "total_score": 0.87,
                    "model_version": "photoscore-default@ab12cd34",
                    "took_ms": 410.2,
                }
            ]
        }
    )


# ---------------------------------------------------------------- playlist exports (issue 26)
class CuePhoto(BaseModel):
    """The photo a cue belongs to."""

    filename: str | None = Field(None, description="The photo's file name as uploaded.")
    valence: float = Field(ge=0.0, le=1.0)
    arousal: float = Field(ge=0.0, le=1.0)


class CueSong(BaseModel):
    """The song a photo gets, with an absolute URL a player or editor can open."""

    id: int
    title: str
    artist: str | None = None
    album: str | None = None
    license: str | None = Field(None, description="Licence / attribution text, when known: keep it with the song.")
    url: str | None = Field(None, description="Absolute URL of the audio (HTTP Range supported); null if none.")
    duration: float = Field(ge=0.0, description="Seconds, the whole song.")


class Cue(BaseModel):
    """Photo -> song: which segment of the song, where it falls on the album's timeline, and why."""

    index: int = Field(ge=0, description="The photo's position in the album (0-based).")
    photo: CuePhoto
    song: CueSong
    segment: Segment = Field(description="Seconds into the song: the best-matching window to play.")
    timeline: Segment = Field(description="Seconds into the album: the segments played back to back.")
    score: float = Field(ge=0.0, le=1.0)
    why: Why


class CueSheet(BaseModel):
    """The album as a JSON cue sheet (`format=cue`), for video editors and scripts."""

    format: Literal["photoscore-cue-sheet"] = "photoscore-cue-sheet"
    version: Literal[1] = 1
    title: str
    model_version: str
    total_duration: float = Field(ge=0.0, description="Seconds: the album's timeline.")
    total_score: float
    cues: list[Cue]

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "format": "photoscore-cue-sheet",
                    "version": 1,
                    "title": "PhotoScore album",
                    "model_version": "photoscore-default@ab12cd34",
                    "total_duration": 10.0,
                    "total_score": 0.87,
                    "cues": [_CUE_EXAMPLE],
                }
            ]
        }
    )


# ------------------------------------------------------------------------- soundtrack (issue 27)
class SceneOut(BaseModel):
    """One scene of the video: a shot, or short shots merged up to the minimum scene length."""

    index: int = Field(ge=0)
    start: float = Field(ge=0.0, description="Seconds into the video.")
    end: float = Field(ge=0.0)
    first_frame: int = Field(ge=0)
    last_frame: int = Field(ge=0, description="Inclusive.")
    shots: int = Field(ge=1, description="Shots merged into this scene.")
    image: VA = Field(description="The scene's VA: the mean over its sampled frames.")
    cue: int = Field(ge=0, description="The cue (song) that plays over it.")
    keyframe: str | None = Field(
        None, description="A small JPEG of the scene's middle sample as a `data:` URL (only with `keyframes=true`)."
    )


class VideoOut(BaseModel):
    """What the service found in the upload."""

    filename: str | None = None
    duration: float = Field(ge=0.0, description="Seconds.")
    fps: float = Field(ge=0.0)
    width: int = Field(ge=0)
    height: int = Field(ge=0)
    frames: int = Field(ge=0)
    codec: str
    container: str
    shots: int = Field(ge=1, description="Shots found: detected cuts + 1.")
    cuts: list[float] = Field(description="Seconds into the video of each detected cut.")


class SoundtrackCue(Cue):
    """A cue of the video's soundtrack: `timeline` is where it plays in the video."""

    scenes: list[int] = Field(description="The scenes it plays over (several when `max_songs` groups calm scenes).")


class SoundtrackSheet(CueSheet):
    """The video's soundtrack: the playlist cue sheet (`format=cue` of `/playlist`), each cue's
    `timeline` the stretch of video it plays over, plus the video and its scenes."""

    cues: list[SoundtrackCue]  # type: ignore[assignment]
    video: VideoOut
    scenes: list[SceneOut]
    took_ms: float = Field(0.0, ge=0.0)

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "format": "photoscore-cue-sheet",
                    "version": 1,
                    "title": "holiday.mp4",
                    "model_version": "photoscore-default@ab12cd34",
                    "total_duration": 7.5,
                    "total_score": 0.87,
                    "cues": [
                        {
                            **_CUE_EXAMPLE,
                            "photo": {"filename": "holiday.mp4", "valence": 0.61, "arousal": 0.42},
                            "segment": {"start": 24.0, "end": 31.5},
                            "timeline": {"start": 0.0, "end": 7.5},
                            "scenes": [0],
                        }
                    ],
                    "video": {
                        "filename": "holiday.mp4",
                        "duration": 7.5,
                        "fps": 25.0,
                        "width": 1920,
                        "height": 1080,
                        "frames": 188,
                        "codec": "h264",
                        "container": "MP4/MOV",
                        "shots": 2,
                        "cuts": [2.0],
                    },
                    "scenes": [
                        {
                            "index": 0,
                            "start": 0.0,
                            "end": 7.5,
                            "first_frame": 0,
                            "last_frame": 187,
                            "shots": 2,
                            "image": {"valence": 0.61, "arousal": 0.42},
                            "cue": 0,
                        }
                    ],
                    "took_ms": 2410.0,
                }
            ]
        }
    )


M3U8_EXAMPLE = """#EXTM3U
#PLAYLIST:PhotoScore album
#EXTINF:10,Wesnoth - Elvish Theme
#EXTVLCOPT:start-time=24
#EXTVLCOPT:stop-time=34
http://localhost:8000/tracks/3/audio
"""

XSPF_EXAMPLE = """<?xml version="1.0" encoding="UTF-8"?>
<playlist xmlns="http://xspf.org/ns/0/" xmlns:vlc="http://www.videolan.org/vlc/playlist/ns/0/" version="1">
  <title>PhotoScore album</title>
  <creator>PhotoScore</creator>
  <trackList>
    <track>
      <location>http://localhost:8000/tracks/3/audio</location>
      <title>Elvish Theme</title>
      <creator>Wesnoth</creator>
      <annotation>photo 1 (beach.jpg): photo relaxed · gentle (0.61, 0.42) · song ...</annotation>
      <album>The Battle for Wesnoth</album>
      <trackNum>1</trackNum>
      <duration>10000</duration>
      <meta rel="urn:photoscore:segment-start">24</meta>
      <meta rel="urn:photoscore:segment-end">34</meta>
      <extension application="http://www.videolan.org/vlc/playlist/0">
        <vlc:id>0</vlc:id>
        <vlc:option>start-time=24</vlc:option>
        <vlc:option>stop-time=34</vlc:option>
      </extension>
    </track>
  </trackList>
</playlist>
"""


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


class IndexingProgress(BaseModel):
    """The last `photoscore index` run, from its progress file (`app.core.progress`)."""

    label: str = Field(description="What is indexed, e.g. 'the demo library'.")
    done: int = Field(ge=0, description="Songs handled so far (added, skipped as indexed, or failed).")
    total: int = Field(ge=0, description="Songs in the run.")
    failed: int = Field(0, ge=0)
    current: str | None = Field(None, description="The file being indexed now.")
    state: str = Field(description="running, done, interrupted, failed, or stale (its process is gone).")
    started: float = Field(description="Unix time.")
    updated: float = Field(description="Unix time of the last update.")
    finished: float | None = None
    pid: int
    host: str
    message: str = Field(description='The sentence the page shows: "indexing the demo library: 12 of 73 songs".')


class ReadyResponse(BaseModel):
    """Readiness: every check must pass before a load balancer sends traffic."""

    status: Literal["ready", "unavailable"]
    checks: dict[str, bool] = Field(description="model, index and database.")
    detail: str | None = Field(None, description="Why the service is not ready.")
    model_version: str | None = None
    tracks: int = Field(0, ge=0, description="Tracks in this replica's live index.")
    clips: int = Field(0, ge=0, description="Clips in this replica's live index.")
    indexing: IndexingProgress | None = Field(
        None, description="The last `photoscore index` run (information only: never makes the service unready)."
    )

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
