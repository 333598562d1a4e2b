"""POST /playlist: one song per photo of an album, following its emotional arc."""

from __future__ import annotations

import math
import time
from typing import Annotated, Any, Literal
from urllib.parse import urljoin

from fastapi import APIRouter, Body, File, HTTPException, Query, Request, UploadFile, status
from fastapi.responses import JSONResponse, Response

from app.api.deps import RecommenderDep, SettingsDep
from app.api.errors import decode_error
from app.api.forms import StrictFormRoute, read_upload
from app.api.params import (
    ArousalShiftQ,
    DedupeQ,
    MaxPerArtistQ,
    MoodQ,
    SeedQ,
    SegmentQ,
    SmoothnessQ,
    TitleQ,
    ValenceShiftQ,
    search_options,
)
from app.api.responses import download, result_row
from app.api.schemas import (
    M3U8_EXAMPLE,
    VA,
    XSPF_EXAMPLE,
    CueSheet,
    PlaylistEntry,
    PlaylistResponse,
    error_responses,
)
from app.api.security import ReadAuth
from app.core.ranking import OptionError
from app.services.playlist_export import FORMATS, Cue, ExportFormat, Plan
from app.services.recommend import EmptyCatalogueError, PhotoError, PlaylistOptions
from model.image import SUPPORTED_IMAGES

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

**Take it away**: `format=m3u8` (a playlist for VLC and other players: `#EXTINF` and VLC's
`#EXTVLCOPT:start-time`/`stop-time`, so each song plays its segment), `format=xspf` (XSPF 1, the
segment as `meta` and as VLC options), or `format=cue` (a JSON cue sheet: photo -> song, segment,
place on the album's timeline, why) answer the same plan as a download (`Content-Disposition:
attachment`); `json` (default) is the answer below. Song URLs in the files are absolute, on this
service. A plan already fetched as JSON converts without recomputing: `POST /playlist/export`.

Example:

    curl -F images=@1.jpg -F images=@2.jpg -F images=@3.jpg \\
        'http://localhost:8000/playlist?segment_seconds=10&mood=calmer'
    curl -OJ -F images=@1.jpg -F images=@2.jpg 'http://localhost:8000/playlist?format=m3u8'
"""

DownloadFormat = Literal["json", "m3u8", "xspf", "cue"]
MAX_SECONDS = 1e6  # a segment or song in an exported plan: beyond this a plan was not ours

_DOWNLOADS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The plan: JSON by default, or the file `format` asks for (as an attachment).",
        "content": {
            FORMATS["m3u8"].media_type: {"schema": {"type": "string"}, "example": M3U8_EXAMPLE},
            FORMATS["xspf"].media_type: {"schema": {"type": "string"}, "example": XSPF_EXAMPLE},
            FORMATS["cue"].media_type: {"schema": {"$ref": "#/components/schemas/CueSheet"}},
        },
    }
}


class CueSheetResponse(JSONResponse):
    """The cue sheet's own JSON media type, so `/docs` and clients tell it from the plan."""

    media_type = FORMATS["cue"].media_type


def _location(base: str, audio_url: str | None, index: int) -> str | None:
    """The song's absolute URL: only paths on this service, never a URL a body smuggles in."""
    if audio_url is None:
        return None
    if not audio_url.startswith("/") or audio_url.startswith("//") or any(c.isspace() for c in audio_url):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"entries[{index}].track.audio_url: {audio_url[:80]!r} is not a path on this service "
            "(as /tracks/{id}/audio)",
        )
    return urljoin(base, audio_url)


def export_plan(response: PlaylistResponse, base_url: str, title: str) -> Plan:
    """The API's plan as the exporters' plain `Plan` (absolute song URLs on `base_url`)."""
    cues = []
    for i, e in enumerate(response.entries):
        times = (e.segment.start, e.segment.end, e.track.duration)
        if not all(math.isfinite(t) and t <= MAX_SECONDS for t in times):
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                f"entries[{i}]: segment and duration must be finite seconds up to {MAX_SECONDS:g}",
            )
        if e.segment.end < e.segment.start:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                f"entries[{i}].segment: end {e.segment.end:g} is before start {e.segment.start:g}",
            )
        cues.append(
            Cue(
                index=e.index,
                photo=e.filename,
                photo_valence=e.image.valence,
                photo_arousal=e.image.arousal,
                track_id=e.track.id,
                title=e.track.title,
                artist=e.track.artist,
                album=e.track.album,
                license=e.track.license,
                location=_location(base_url, e.track.audio_url, i),
                track_duration=e.track.duration,
                start=e.segment.start,
                end=e.segment.end,
                score=e.score,
                why=e.why.model_dump(mode="json"),
                summary=e.why.summary,
            )
        )
    return Plan(cues=cues, title=title, model_version=response.model_version, total_score=response.total_score)


def _label(index: int, name: str | None) -> str:
    """How an error names one photo of the album: its place and file name."""
    return f"images[{index}]" + (f" ({name!r})" if name else "")


@router.post(
    "/playlist",
    response_model=PlaylistResponse,
    summary="A playlist for an album: one song per photo",
    description=DESCRIPTION,
    dependencies=[ReadAuth],
    responses={**_DOWNLOADS, **error_responses(400, 401, 413, 415, 422, 503)},
)
async def playlist(
    request: Request,
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
    smoothness: SmoothnessQ = 1.0,
    export_format: Annotated[
        DownloadFormat,
        Query(
            alias="format",
            description="`json` (default): the plan below. `m3u8`, `xspf` or `cue`: the plan as that file, "
            "an attachment.",
            examples=["m3u8"],
        ),
    ] = "json",
    title: TitleQ = "PhotoScore album",
) -> PlaylistResponse | Response:
    started = time.perf_counter()
    limit = settings.max_playlist_photos
    if not MIN_PHOTOS <= len(images) <= limit:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"images: {len(images)} photo{'s' if len(images) != 1 else ''} sent; send {MIN_PHOTOS} to {limit} "
            "(PHOTOSCORE_MAX_PLAYLIST_PHOTOS)",
        )
    count = min(MAX_CANDIDATES, len(images) + EXTRA_CANDIDATES)
    search = search_options(count, 0, valence_shift, arousal_shift, mood, 0, dedupe, seed, segment_seconds)
    max_bytes = int(settings.max_upload_mb * 1e6)
    photos = [await read_upload(upload, _label(i, upload.filename), max_bytes) for i, upload in enumerate(images)]
    try:
        plan = await recommender.playlist(photos, PlaylistOptions(search, smoothness, max_per_artist))
    except PhotoError as exc:
        raise decode_error(exc.error, _label(exc.index, images[exc.index].filename)) from exc
    except (EmptyCatalogueError, OptionError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    entries = []
    for i, (result, photo) in enumerate(zip(plan.results(), plan.photos, strict=True)):
        if result is None:
            continue
        row = result_row(result)
        entries.append(
            PlaylistEntry(
                index=i,
                filename=images[i].filename,
                image=VA(valence=photo[0], arousal=photo[1]),
                track=row.track,
                score=row.score,
                segment=row.segment,
                why=row.why,
            )
        )
    if len(entries) != len(images):
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "playlist: a chosen song was deleted meanwhile; retry")
    answer = PlaylistResponse(
        entries=entries,
        total_duration=round(sum(e.segment.end - e.segment.start for e in entries), 3),
        total_score=round(plan.total_score, 6),
        model_version=plan.model_version,
        took_ms=round((time.perf_counter() - started) * 1000.0, 2),
    )
    if export_format == "json":
        return answer
    return download(export_plan(answer, str(request.base_url), title), export_format)


EXPORT_DESCRIPTION = """
Turn a plan that `POST /playlist` answered (its JSON, as is) into a file to take away, without
uploading the photos again: `format=m3u8` (players: `#EXTINF`, VLC's `#EXTVLCOPT:start-time` and
`stop-time`), `xspf` (XSPF 1 with the segment as `meta` and VLC options) or `cue` (default: the
JSON cue sheet below). Song URLs become absolute on this service; a body whose `audio_url` is not
a path here, or whose segment ends before it starts, is refused with a 422 naming the entry.

Example:

    curl -s -F images=@1.jpg -F images=@2.jpg http://localhost:8000/playlist > plan.json
    curl -OJ -H 'Content-Type: application/json' --data @plan.json \\
        'http://localhost:8000/playlist/export?format=xspf'
"""


@router.post(
    "/playlist/export",
    response_model=CueSheet,
    response_class=CueSheetResponse,
    summary="A planned playlist as M3U8, XSPF or a JSON cue sheet",
    description=EXPORT_DESCRIPTION,
    dependencies=[ReadAuth],
    responses={
        200: {
            "description": "The file, as an attachment.",
            "content": {
                FORMATS["m3u8"].media_type: {"schema": {"type": "string"}, "example": M3U8_EXAMPLE},
                FORMATS["xspf"].media_type: {"schema": {"type": "string"}, "example": XSPF_EXAMPLE},
            },
        },
        **error_responses(401, 413, 422),
    },
)
async def export_playlist(
    request: Request,
    plan: Annotated[PlaylistResponse, Body(description="The plan as `POST /playlist` answered it.")],
    settings: SettingsDep,
    export_format: Annotated[
        ExportFormat,
        Query(alias="format", description="`m3u8`, `xspf` or `cue` (the JSON cue sheet).", examples=["m3u8"]),
    ] = "cue",
    title: TitleQ = "PhotoScore album",
) -> Response:
    limit = settings.max_playlist_photos
    if not 1 <= len(plan.entries) <= limit:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"entries: {len(plan.entries)} sent; a plan has 1 to {limit} (PHOTOSCORE_MAX_PLAYLIST_PHOTOS)",
        )
    return download(export_plan(plan, str(request.base_url), title), export_format)
