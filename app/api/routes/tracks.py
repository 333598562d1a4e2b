"""Catalogue management: add (synchronously indexed), list, get, delete, stream audio."""

from __future__ import annotations

import hashlib
import logging
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Path, Query, Response, UploadFile, status
from fastapi.responses import FileResponse
from pydantic import BeforeValidator
from starlette.concurrency import run_in_threadpool

from app.api.audio_file import RANGE_NOT_SATISFIABLE, AudioFileResponse
from app.api.deps import (
    LiveIndexDep,
    SessionDep,
    SessionFactoryDep,
    SettingsDep,
    StoreDep,
    UploadGateDep,
    WorkerDep,
)
from app.api.errors import decode_error
from app.api.forms import StrictFormRoute, read_upload, upload_chunks
from app.api.responses import track_out
from app.api.schemas import TrackList, TrackOut, error_responses
from app.api.security import ReadAuth, WriteAuth
from app.core import catalogue
from app.core.models import Track
from app.core.storage import media_type_for
from app.core.text import clean_text
from app.services import ingest
from app.services import tracks as tracks_service
from model.audio import SUPPORTED_AUDIO, AudioDecodeError

log = logging.getLogger(__name__)

router = APIRouter(tags=["tracks"], route_class=StrictFormRoute)  # form text must be valid UTF-8


def _canonical_id(value: object) -> object:
    """Digits only, no leading zero: int() would also read "1_0", " 10" and "+10" as track 10."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit() and not value.startswith("0")):
        raise ValueError("a track id is a positive integer in digits, without sign or leading zero (e.g. 3)")
    return value


TrackId = Annotated[
    int, BeforeValidator(_canonical_id), Path(ge=1, le=2**63 - 1, description="Track id.", examples=[3])
]


# --------------------------------------------------------------------------------- helpers
async def _hash_upload(upload: UploadFile, field: str, limit_bytes: int) -> str:
    """SHA-256 of an upload read in chunks (nothing kept); 413 over the limit, 400 when empty."""
    digest = hashlib.sha256()
    await upload.seek(0)
    async for chunk in upload_chunks(upload, field, limit_bytes):
        digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------- routes
@router.post(
    "/tracks",
    response_model=TrackOut,
    status_code=status.HTTP_201_CREATED,
    summary="Add a song to the catalogue",
    description=f"""
Upload audio as the multipart field **`audio`** ({SUPPORTED_AUDIO}), with optional `title`,
`artist`, `album` and `license` (missing ones come from the file's tags, then its name).
Synchronous: the audio is decoded, cut into 2-second clips, embedded, stored under its content
hash, written to the catalogue and added to the live index before the answer comes back; other
replicas pick it up within `index_sync_seconds`. Needs an API key.

`201` with the new track; `200` with the existing track when the same bytes were added before
(or are being added by a request in flight). At most `PHOTOSCORE_UPLOAD_CONCURRENCY` uploads are
decoded and embedded at once per process and `PHOTOSCORE_UPLOAD_QUEUE_SIZE` more wait; beyond
that, or after `PHOTOSCORE_UPLOAD_QUEUE_WAIT_SECONDS` in the queue, `429` with `Retry-After`.

    curl -H "Authorization: Bearer $KEY" -F audio=@song.ogg -F title="My song" \\
         http://localhost:8000/tracks
""",
    dependencies=[WriteAuth],
    responses={
        200: {"model": TrackOut, "description": "The same audio is already in the catalogue."},
        **error_responses(400, 401, 403, 413, 415, 422, 429, 503),
    },
)
async def add_track(
    response: Response,
    audio: Annotated[UploadFile, File(description=f"The song: {SUPPORTED_AUDIO}.")],
    settings: SettingsDep,
    worker: WorkerDep,
    live: LiveIndexDep,
    store: StoreDep,
    factory: SessionFactoryDep,
    gate: UploadGateDep,
    title: Annotated[str | None, Form(max_length=512, examples=["Elvish Theme"])] = None,
    artist: Annotated[str | None, Form(max_length=512, examples=["Wesnoth"])] = None,
    album: Annotated[str | None, Form(max_length=512)] = None,
    license: Annotated[str | None, Form(max_length=2000, description="Licence / attribution text.")] = None,
) -> TrackOut:
    # No request-long session: a connection held across decoding made each upload need two of
    # the pool's connections, and 16 parallel uploads exhausted it (issue 14, F1). Every DB step
    # opens a short session of its own.
    limit = int(settings.max_upload_mb * 1e6)
    # Hashed from the spooled upload: only an upload holding a slot reads its bytes into memory,
    # so waiting, refused and duplicate uploads cost no RAM for their bodies.
    sha = await _hash_upload(audio, "audio", limit)
    existing = await run_in_threadpool(ingest.find_song, factory, sha)
    if existing is not None:
        response.status_code = status.HTTP_200_OK
        return track_out(existing)

    meta = tracks_service.TrackMetadata(
        title=title, artist=artist, album=album, license=license, file_name=audio.filename
    )
    rules = ingest.AudioRules.from_settings(settings)

    async def work() -> tuple[Track, bool]:
        async with gate.slot():
            await audio.seek(0)
            data = await read_upload(audio, "audio", limit)
            return await ingest.ingest_upload(
                data,
                sha,
                meta,
                rules,
                session_factory=factory,
                worker=worker,
                live=live,
                store=store,
                run_cpu=gate.run,
            )

    # Identical uploads in flight here share one decode and one outcome; across replicas the
    # unique sha256 constraint decides (catalogue.add_track).
    try:
        (track, created), leader = await gate.single_flight(sha, work)
    except AudioDecodeError as exc:
        raise decode_error(exc, "audio") from exc
    if not (created and leader):
        response.status_code = status.HTTP_200_OK
        return track_out(track)
    response.headers["Location"] = f"/tracks/{track.id}"
    return track_out(track)


@router.get(
    "/tracks",
    response_model=TrackList,
    summary="List the catalogue",
    description="Tracks by id, paginated with `offset`/`limit`; `q` filters on title, artist "
    "and album (case-insensitive substring).",
    dependencies=[ReadAuth],
    responses=error_responses(401, 422, 503),
)
def list_tracks(
    session: SessionDep,
    q: Annotated[str | None, Query(max_length=200, description="Text filter.", examples=["theme"])] = None,
    offset: Annotated[int, Query(ge=0, le=2**62, description="Tracks to skip.")] = 0,
    limit: Annotated[int, Query(ge=1, le=200, description="Page size.")] = 20,
) -> TrackList:
    tracks, total = catalogue.list_tracks(session, clean_text(q, 200), offset, limit)
    return TrackList(items=[track_out(t) for t in tracks], total=total, offset=offset, limit=limit)


@router.get(
    "/tracks/{track_id}",
    response_model=TrackOut,
    summary="One track",
    dependencies=[ReadAuth],
    responses=error_responses(401, 404, 422, 503),
)
def get_track(track_id: TrackId, session: SessionDep) -> TrackOut:
    track = catalogue.get_track(session, track_id)
    if track is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no track with id {track_id}")
    return track_out(track)


@router.delete(
    "/tracks/{track_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Remove a track",
    description="Deletes the track and its clips from the catalogue, removes it from this "
    "replica's live index at once (others within `index_sync_seconds`) and deletes its stored "
    "audio. Needs an API key.",
    dependencies=[WriteAuth],
    responses=error_responses(401, 403, 404, 422, 503),
)
def delete_track(track_id: TrackId, session: SessionDep, live: LiveIndexDep, store: StoreDep) -> Response:
    track = catalogue.get_track(session, track_id)
    if track is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no track with id {track_id}")
    key = track.audio_key
    # End the read before writing: on SQLite (WAL) a transaction that read and then writes fails
    # at once with "database is locked" when another writer committed in between (no busy wait).
    session.rollback()
    if not catalogue.delete_track(session, track_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no track with id {track_id}")
    try:
        live.refresh_tracks([track_id])
    except Exception:  # the sync loop will remove it
        log.exception("track %s deleted but still in the live index", track_id)
    if key:
        try:
            tracks_service.release_audio(live.session_factory, store, key)
        except Exception:
            log.exception("could not delete stored audio %s", key)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.head(
    "/tracks/{track_id}/audio",
    response_class=FileResponse,
    summary="Headers of a track's audio (size, type), no body",
    name="track_audio_head",  # its own operationId (the app names operations after routes)
    dependencies=[ReadAuth],
    responses={**error_responses(401, 404, 422, 503), **RANGE_NOT_SATISFIABLE},
)
@router.get(
    "/tracks/{track_id}/audio",
    response_class=FileResponse,
    summary="Stream a track's audio",
    description="The stored audio file with its media type. Supports HTTP `Range` requests "
    "(`206 Partial Content`), so browsers can seek; a Range that is not valid `bytes=` syntax is "
    "ignored (RFC 9110: the whole file), one that lies wholly past the end is `416` with "
    "`Content-Range: bytes */size`.",
    dependencies=[ReadAuth],
    responses={
        200: {
            "description": "The whole file.",
            "content": {m: {} for m in ("audio/ogg", "audio/mpeg", "audio/wav", "audio/flac")},
        },
        206: {"description": "The requested byte range."},
        **error_responses(401, 404, 422, 503),
        **RANGE_NOT_SATISFIABLE,
    },
)
def track_audio(track_id: TrackId, session: SessionDep, store: StoreDep) -> FileResponse:
    track = catalogue.get_track(session, track_id)
    if track is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no track with id {track_id}")
    path = tracks_service.audio_path(track, store)
    if path is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no audio stored for track {track_id}")
    try:  # opened before any header is sent: a delete from now on cannot cut the body short
        return AudioFileResponse.open(
            path,
            media_type=media_type_for(path),
            content_disposition_type="inline",
            headers={"Cache-Control": "public, max-age=86400"},
        )
    except FileNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"audio of track {track_id} is gone") from exc
    except OSError as exc:  # a library file made unreadable (permissions, a directory now)
        log.warning("audio of track %s cannot be read: %s", track_id, exc)
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"audio of track {track_id} cannot be read") from exc
