"""POST /soundtrack: a video's scenes, one song segment each, as a cue sheet or an Opus preview."""

from __future__ import annotations

import base64
import io
import math
import time
from typing import Annotated, Literal
from urllib.parse import urljoin

from fastapi import APIRouter, Body, Depends, File, HTTPException, Query, Request, UploadFile, status
from fastapi.responses import JSONResponse, Response

from app.api.admission import UploadGate
from app.api.deps import RecommenderDep, SettingsDep, StoreDep, UploadGateDep
from app.api.errors import decode_error
from app.api.forms import StrictFormRoute, single_part
from app.api.params import (
    MAX_TITLE,
    ArousalShiftQ,
    DedupeQ,
    MaxPerArtistQ,
    MoodQ,
    SeedQ,
    ValenceShiftQ,
    search_options,
)
from app.api.responses import DOWNLOAD_NAME, download, track_out, why_out
from app.api.schemas import M3U8_EXAMPLE, XSPF_EXAMPLE, SceneOut, SoundtrackSheet, VideoOut, error_responses
from app.api.security import ReadAuth
from app.core.catalogue import tracks_by_id
from app.core.models import Track
from app.core.ranking import OptionError, target_of
from app.core.storage import AudioStore
from app.services.playlist_export import FORMATS, Cue, Plan, cue_sheet
from app.services.recommend import Recommender, result_of
from app.services.soundtrack import (
    PreviewError,
    PreviewPiece,
    Soundtrack,
    plan_soundtrack,
    render_preview,
)
from app.services.tracks import audio_path
from app.services.video import SUPPORTED_VIDEO, VideoError, VideoLimits, analyse_video

router = APIRouter(tags=["recommend"], route_class=StrictFormRoute)

OGG_OPUS = "audio/ogg"
KEYFRAME_WIDTH = 160

DESCRIPTION = f"""
Upload a video as the multipart field **`video`** ({SUPPORTED_VIDEO}; at most
`PHOTOSCORE_MAX_VIDEO_MB` megabytes, `PHOTOSCORE_MAX_VIDEO_SECONDS` seconds and
`PHOTOSCORE_MAX_VIDEO_SHOTS` shots). The video is decoded with PyAV and cut into shots by
PySceneDetect's content detector; shots shorter than `min_scene_seconds` are merged into the
scene before them. A few frames of each scene are embedded like photos and averaged; then, as
`/playlist` does for an album, one song per scene is planned along the video's emotional arc with
the same `smoothness`, mood steering and variety options, no song twice unless `repeat_songs=true`.
`max_songs` below the number of scenes lets adjacent scenes share a song (the closest in mood, calm
ones first). Each song's segment is
as long as its scenes, around the song's best-matching window.

**The answer** is a cue sheet in the format of `/playlist`'s `format=cue` export: per cue the
song, its `segment` (seconds into the song), its `timeline` (seconds into the video: where it
plays), the scenes' VA (`photo`) and `why`; plus `video` (duration, frames, cuts) and `scenes`
(each with its VA and cue; `keyframes=true` adds a small JPEG of each). `format=m3u8|xspf|cue`
answers the same plan as a download.

**Preview**: `render=audio` answers the soundtrack itself as one Ogg/Opus file (mono, 48 kbit/s,
as long as the video): each segment laid at its scene's start with
short crossfades, to play beside the video. A cue sheet already fetched renders without
analysing the video again: `POST /soundtrack/preview`.

Refused with a 4xx naming the reason: too large or too long (413), an unsupported container or
codec (415), no video stream, too many shots or only black frames (422), a truncated or corrupt
file (400).

Example:

    curl -F video=@holiday.mp4 'http://localhost:8000/soundtrack?min_scene_seconds=3&max_songs=4'
    curl -o soundtrack.ogg -F video=@holiday.mp4 'http://localhost:8000/soundtrack?render=audio'
"""


def _keyframe(img: object) -> str | None:
    """A small JPEG data URL of a scene's keyframe, for the page's strip."""
    from PIL import Image

    if not isinstance(img, Image.Image):
        return None
    small = img.copy()
    small.thumbnail((KEYFRAME_WIDTH, KEYFRAME_WIDTH))
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def sheet_of(
    found: Soundtrack, request: Request, filename: str | None, title: str, shift: tuple[float, float], keyframes: bool
) -> tuple[SoundtrackSheet, Plan]:
    """The cue sheet of a planned soundtrack, and the same plan for the M3U8/XSPF writers."""
    a = found.analysis
    steered = shift != (0.0, 0.0)
    cues: list[Cue] = []
    owner: dict[int, int] = {}
    for i, part in enumerate(found.parts):
        track = found.tracks.get(part.hit.track_id)
        if track is None:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE, "soundtrack: a chosen song was deleted meanwhile; retry"
            )
        out = track_out(track)
        target = target_of(part.va, shift) if steered else None
        why = why_out(result_of(track, part.hit, part.va, target, found.segment_va.get(track.id)).why)
        for s in part.scenes:
            owner[s] = i
        cues.append(
            Cue(
                index=i,
                photo=filename,
                photo_valence=round(part.va[0], 4),
                photo_arousal=round(part.va[1], 4),
                track_id=track.id,
                title=track.title,
                artist=track.artist,
                album=track.album,
                license=track.license,
                location=urljoin(str(request.base_url), out.audio_url) if out.audio_url else None,
                track_duration=out.duration,
                start=part.hit.start,
                end=part.hit.end,
                score=part.hit.score,
                why=why.model_dump(mode="json"),
                summary=why.summary,
                timeline=(part.start, part.end),
            )
        )
    plan = Plan(cues=cues, title=title, model_version=found.model_version, total_score=round(found.total_score, 6))
    body = cue_sheet(plan)
    body["total_duration"] = a.duration
    for cue, part in zip(body["cues"], found.parts, strict=True):
        cue["scenes"] = part.scenes
    body["video"] = VideoOut(
        filename=filename,
        duration=a.duration,
        fps=a.fps,
        width=a.width,
        height=a.height,
        frames=a.frames,
        codec=a.codec,
        container=a.container,
        shots=len(a.cuts) + 1,
        cuts=a.cut_times,
    ).model_dump()
    body["scenes"] = [
        SceneOut(
            index=s.index,
            start=s.start,
            end=s.end,
            first_frame=s.first_frame,
            last_frame=s.last_frame,
            shots=s.shots,
            image={"valence": round(va[0], 4), "arousal": round(va[1], 4)},
            cue=owner[s.index],
            keyframe=_keyframe(s.keyframe) if keyframes else None,
        ).model_dump()
        for s, va in zip(a.scenes, found.scene_va, strict=True)
    ]
    return SoundtrackSheet.model_validate(body), plan


RenderQ = Annotated[
    Literal["audio"] | None,
    Query(description="`audio`: answer the soundtrack as one Ogg/Opus file instead of the cue sheet."),
]


@router.post(
    "/soundtrack",
    response_model=SoundtrackSheet,
    summary="A soundtrack for a video: one song segment per scene",
    description=DESCRIPTION,
    dependencies=[ReadAuth, Depends(single_part("video"))],
    responses={
        200: {
            "description": "The cue sheet (JSON), the file `format` asks for, or with `render=audio` the preview.",
            "content": {
                OGG_OPUS: {"schema": {"type": "string", "format": "binary"}},
                FORMATS["cue"].media_type: {"schema": {"$ref": "#/components/schemas/SoundtrackSheet"}},
                FORMATS["m3u8"].media_type: {"schema": {"type": "string"}, "example": M3U8_EXAMPLE},
                FORMATS["xspf"].media_type: {"schema": {"type": "string"}, "example": XSPF_EXAMPLE},
            },
        },
        **error_responses(400, 401, 413, 415, 422, 429, 503),
    },
)
async def soundtrack(
    request: Request,
    video: Annotated[UploadFile, File(description=f"The video: {SUPPORTED_VIDEO}.")],
    settings: SettingsDep,
    recommender: RecommenderDep,
    store: StoreDep,
    gate: UploadGateDep,
    min_scene_seconds: Annotated[
        float,
        Query(ge=0.5, le=60.0, description="Shots shorter than this merge into the scene before them.", examples=[3]),
    ] = 3.0,
    max_songs: Annotated[
        int | None,
        Query(ge=1, le=1000, description="At most this many songs: adjacent calm, similar scenes share one."),
    ] = None,
    valence_shift: ValenceShiftQ = 0.0,
    arousal_shift: ArousalShiftQ = 0.0,
    mood: MoodQ = None,
    max_per_artist: MaxPerArtistQ = 0,
    dedupe: DedupeQ = True,
    seed: SeedQ = None,
    smoothness: Annotated[
        float,
        Query(ge=0.0, le=10.0, description="Weight of the VA-jump penalty between consecutive songs (as /playlist)."),
    ] = 1.0,
    repeat_songs: Annotated[
        bool,
        Query(
            description="Let a song play again in a later scene: each scene gets its best song "
            "(default: no song twice, as `/playlist`)."
        ),
    ] = False,
    render: RenderQ = None,
    export_format: Annotated[
        Literal["json", "m3u8", "xspf", "cue"],
        Query(alias="format", description="`json` (default): the cue sheet. `m3u8`, `xspf`, `cue`: as a download."),
    ] = "json",
    keyframes: Annotated[bool, Query(description="Add a small JPEG of each scene (for the page's strip).")] = False,
    title: Annotated[str | None, Query(min_length=1, max_length=MAX_TITLE, description="Title in exports.")] = None,
) -> Response | SoundtrackSheet:
    started = time.perf_counter()
    options = search_options(10, 0, valence_shift, arousal_shift, mood, 0, dedupe, seed, 2.0)
    limit = int(settings.max_video_mb * 1e6)
    if video.size is not None and video.size > limit:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"video: the upload exceeds the limit of {settings.max_video_mb:g} MB (PHOTOSCORE_MAX_VIDEO_MB)",
        )
    if recommender.live.n_tracks == 0:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "soundtrack: the catalogue has no songs yet")
    limits = VideoLimits(
        max_seconds=settings.max_video_seconds,
        max_shots=settings.max_video_shots,
        min_scene_seconds=min_scene_seconds,
        sample_size=int(recommender.worker.matcher.image_size),
    )
    async with gate.slot():  # decoding is the heaviest work a read does: the upload slots bound it
        try:
            analysis = await gate.run(analyse_video, video.file, limits)
        except VideoError as exc:
            raise decode_error(exc, "video") from exc
    try:
        found = await plan_soundtrack(
            recommender, analysis, options, smoothness, max_per_artist, max_songs, repeat_songs
        )
    except OptionError as exc:
        detail = str(exc).replace("playlist:", "soundtrack:").replace("every photo", "every scene")
        detail = detail.replace("send fewer photos", "raise min_scene_seconds, set max_songs")
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail) from exc
    name = video.filename or None
    sheet, plan = sheet_of(found, request, name, title or name or "PhotoScore soundtrack", options.shift, keyframes)
    sheet.took_ms = round((time.perf_counter() - started) * 1000.0, 2)
    if render == "audio":
        async with gate.slot():
            return await _preview(sheet, settings.max_video_seconds, recommender, store, gate)
    if export_format == "json":
        return sheet
    if export_format == "cue":
        return JSONResponse(
            sheet.model_dump(mode="json"),
            media_type=FORMATS["cue"].media_type,
            headers={"Content-Disposition": f'attachment; filename="{DOWNLOAD_NAME}-soundtrack.cue.json"'},
        )
    return download(plan, export_format)


async def _preview(
    sheet: SoundtrackSheet, max_seconds: float, recommender: Recommender, store: AudioStore, gate: UploadGate
) -> Response:
    """The cue sheet's soundtrack as Ogg/Opus (each segment at its timeline's start)."""
    duration = sheet.video.duration
    if not (math.isfinite(duration) and 0 < duration <= max_seconds):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"video.duration: {duration:g} s; a preview lasts up to {max_seconds:g} s (PHOTOSCORE_MAX_VIDEO_SECONDS)",
        )
    ids = [c.song.id for c in sheet.cues]
    for i, track_id in enumerate(ids):
        if not 0 < track_id < 2**63:  # a database id: anything else names no song (and overflows SQL)
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"cues[{i}].song.id: {track_id} is no track id")

    def look_up() -> dict[int, Track]:
        with recommender.session_factory() as session:
            return tracks_by_id(session, ids)

    tracks = await gate.run(look_up)
    pieces = []
    for i, cue in enumerate(sheet.cues):
        track = tracks.get(cue.song.id)
        path = audio_path(track, store) if track is not None else None
        if track is None or path is None:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, f"cues[{i}].song: track {cue.song.id} has no audio here"
            )
        seg, at = cue.segment, cue.timeline
        if not (seg.end >= seg.start and at.end >= at.start and at.start < duration + 1e-3):
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                f"cues[{i}]: segment and timeline must run forwards and start inside the video",
            )
        if seg.start > float(track.duration or 0.0) + 1e-3:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"cues[{i}].segment: starts after the song ends")
        pieces.append(PreviewPiece(path, seg.start, seg.end, at.start, min(at.end, duration)))
    try:
        data = await gate.run(render_preview, pieces, duration)
    except PreviewError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"preview: {exc}") from exc
    return Response(
        data,
        media_type=OGG_OPUS,
        headers={"Content-Disposition": f'attachment; filename="{DOWNLOAD_NAME}-soundtrack.ogg"'},
    )


PREVIEW_DESCRIPTION = """
Render the soundtrack of a cue sheet that `POST /soundtrack` answered (its JSON, as is) as one
Ogg/Opus file, without uploading or analysing the video again: each cue's `segment` of its song
laid at its `timeline` start, with short crossfades, as long as `video.duration` (at most
`PHOTOSCORE_MAX_VIDEO_SECONDS`). Songs are looked up by id on this service; a cue naming a song
without audio here is a 422.

Example:

    curl -s -F video=@holiday.mp4 http://localhost:8000/soundtrack > sheet.json
    curl -o soundtrack.ogg -H 'Content-Type: application/json' --data @sheet.json \\
        http://localhost:8000/soundtrack/preview
"""


@router.post(
    "/soundtrack/preview",
    summary="A planned soundtrack as one Ogg/Opus file",
    description=PREVIEW_DESCRIPTION,
    dependencies=[ReadAuth],
    response_class=Response,
    responses={
        200: {"description": "The preview.", "content": {OGG_OPUS: {"schema": {"type": "string", "format": "binary"}}}},
        **error_responses(401, 413, 422, 429),
    },
)
async def preview(
    sheet: Annotated[SoundtrackSheet, Body(description="The cue sheet as `POST /soundtrack` answered it.")],
    settings: SettingsDep,
    recommender: RecommenderDep,
    store: StoreDep,
    gate: UploadGateDep,
) -> Response:
    if not 1 <= len(sheet.cues) <= settings.max_video_shots:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"cues: {len(sheet.cues)} sent; a soundtrack has 1 to {settings.max_video_shots} "
            "(PHOTOSCORE_MAX_VIDEO_SHOTS)",
        )
    async with gate.slot():
        return await _preview(sheet, settings.max_video_seconds, recommender, store, gate)
