"""Catalogue management: add (synchronously indexed), list, get, delete, stream audio."""

from __future__ import annotations

import hashlib
import io
import logging
import os
from pathlib import Path as FsPath
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Path, Query, Response, UploadFile, status
from fastapi.responses import FileResponse
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool

from app import catalogue
from app.models import Track
from app.routes.common import clean_text, read_upload, track_out
from app.routes.deps import LiveIndexDep, SessionDep, SettingsDep, StoreDep, WorkerDep
from app.schemas import TrackList, TrackOut, error_responses
from app.security import ReadAuth, WriteAuth
from app.storage import AudioStore, media_type_for, sniff_audio_extension
from model.audio import DEFAULT_MAX_SAMPLES, SAMPLE_RATE, AudioDecodeError, load_audio, probe_duration

log = logging.getLogger(__name__)

router = APIRouter(tags=["tracks"])

SUPPORTED_AUDIO = "WAV, FLAC, Ogg Vorbis, Opus, MP3 or M4A"
TrackId = Annotated[int, Path(ge=1, le=2**63 - 1, description="Track id.", examples=[3])]


# --------------------------------------------------------------------------------- helpers
def _decode(
    data: bytes, max_seconds: float, min_seconds: float, max_samples: int = DEFAULT_MAX_SAMPLES
) -> tuple[Any, float]:
    """Decode upload bytes to mono 22.05 kHz; 4xx HTTPException for unusable audio.

    ``max_samples`` bounds frames x channels at the native rate (decoded memory), checked from
    the header and while decoding: a tiny FLAC can declare 655,350 Hz x 8 channels."""
    limit_hint = "(PHOTOSCORE_MAX_AUDIO_SECONDS)"
    probed = probe_duration(data)
    if probed is not None and probed > max_seconds + 0.5:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"audio: {probed:.1f} s long; the limit is {max_seconds:g} s {limit_hint}",
        )
    try:
        y = load_audio(data, max_seconds=max_seconds, max_samples=max_samples)
    except AudioDecodeError as exc:
        text = str(exc)
        if "too long" in text:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"audio: {text} {limit_hint}") from exc
        if "too large" in text:
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE, f"audio: {text} (PHOTOSCORE_MAX_AUDIO_SAMPLES)"
            ) from exc
        if sniff_audio_extension(data) is None:
            raise HTTPException(
                status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                f"audio: not a supported audio file ({text}); send {SUPPORTED_AUDIO}",
            ) from exc
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"audio: cannot decode: {text}") from exc
    duration = len(y) / SAMPLE_RATE
    if duration < min_seconds:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"audio: {duration:.2f} s long; at least {min_seconds:g} s is needed (one clip)",
        )
    return y, duration


def _tags(data: bytes) -> dict[str, str]:
    """title/artist/album from the file's own tags, when it has any."""
    try:
        import mutagen

        meta = mutagen.File(io.BytesIO(data), easy=True)
    except Exception:  # mutagen raises many types on odd input; tags are optional
        return {}
    out: dict[str, str] = {}
    tags = getattr(meta, "tags", None) or {}
    for name in ("title", "artist", "album"):
        try:
            value = tags.get(name)
        except Exception:
            value = None
        if isinstance(value, list) and value:
            value = value[0]
        if isinstance(value, str) and (text := clean_text(value)):
            out[name] = text
    return out


def _release_key(session_factory: Any, store: AudioStore, key: str) -> None:
    """Delete a stored file unless a track still references it."""
    with session_factory() as session:
        refs = session.scalar(select(func.count(Track.id)).where(Track.audio_key == key)) or 0
    if not refs:
        store.delete(key)


def _audio_path(track: Track, store: AudioStore) -> FsPath | None:
    if track.audio_key:
        try:
            path = store.path(track.audio_key)
        except ValueError:
            path = None
        if path is not None and path.is_file():
            return path
    if track.source and "://" not in track.source and not track.source.startswith("upload:"):
        path = FsPath(track.source)
        if path.is_file():  # indexed from the operator's own library
            return path
    return None


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

`201` with the new track; `200` with the existing track when the same bytes were added before.

    curl -H "Authorization: Bearer $KEY" -F audio=@song.ogg -F title="My song" \\
         http://localhost:8000/tracks
""",
    dependencies=[WriteAuth],
    responses={
        200: {"model": TrackOut, "description": "The same audio is already in the catalogue."},
        **error_responses(400, 401, 403, 413, 415, 422, 503),
    },
)
async def add_track(
    response: Response,
    audio: Annotated[UploadFile, File(description=f"The song: {SUPPORTED_AUDIO}.")],
    settings: SettingsDep,
    worker: WorkerDep,
    live: LiveIndexDep,
    store: StoreDep,
    session: SessionDep,
    title: Annotated[str | None, Form(max_length=512, examples=["Elvish Theme"])] = None,
    artist: Annotated[str | None, Form(max_length=512, examples=["Wesnoth"])] = None,
    album: Annotated[str | None, Form(max_length=512)] = None,
    license: Annotated[str | None, Form(max_length=2000, description="Licence / attribution text.")] = None,
) -> TrackOut:
    data = await read_upload(audio, "audio", int(settings.max_upload_mb * 1e6))
    sha = hashlib.sha256(data).hexdigest()
    existing = await run_in_threadpool(catalogue.find_track, session, sha)
    if existing is not None:
        response.status_code = status.HTTP_200_OK
        return track_out(existing)

    y, duration = await run_in_threadpool(
        _decode, data, settings.max_audio_seconds, settings.min_audio_seconds, settings.max_audio_samples
    )
    matcher = worker.matcher
    clips = await run_in_threadpool(matcher.featurize, y, settings.clip_hop_seconds)
    if len(clips) == 0:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"audio: no usable 2-second clip ({clips.n_silent} silent, {clips.n_short} too short)",
        )
    embs, vas = await worker.run(matcher.embed_clip_features, clips.features, clips.tagger)

    tags = await run_in_threadpool(_tags, data)
    name = clean_text(FsPath(audio.filename or "").stem, 200)
    meta = {
        "title": clean_text(title) or tags.get("title") or name or "Untitled",
        "artist": clean_text(artist) or tags.get("artist"),
        "album": clean_text(album) or tags.get("album"),
        "license": clean_text(license, 2000),
    }
    key = await run_in_threadpool(store.put, data)
    factory = live.session_factory

    def write() -> tuple[Track, bool]:
        with factory() as s:
            return catalogue.add_track(
                s,
                sha256=sha,
                duration=duration,
                source=f"upload:{key}",
                audio_key=key,
                checkpoint_hash=matcher.checkpoint_hash,
                clips=catalogue.ClipBatch(clips.starts, clips.ends, vas, embs),
                **meta,
            )

    try:
        track, created = await run_in_threadpool(write)
    except BaseException:
        try:
            await run_in_threadpool(_release_key, factory, store, key)
        except Exception:  # the DB is probably down; an orphan file is harmless
            log.warning("could not check references of stored audio %s", key)
        raise
    if not created:  # lost a race with an identical upload
        if track.audio_key != key:
            await run_in_threadpool(_release_key, factory, store, key)
        response.status_code = status.HTTP_200_OK
        return track_out(track)
    try:
        await run_in_threadpool(live.refresh_tracks, [track.id])
    except Exception:  # the DB is the truth: the sync loop will add it
        log.exception("track %s committed but not yet in the live index", track.id)
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
            _release_key(live.session_factory, store, key)
        except Exception:
            log.exception("could not delete stored audio %s", key)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/tracks/{track_id}/audio",
    response_class=FileResponse,
    summary="Stream a track's audio",
    description="The stored audio file with its media type. Supports HTTP `Range` requests "
    "(`206 Partial Content`), so browsers can seek.",
    dependencies=[ReadAuth],
    responses={
        200: {
            "description": "The whole file.",
            "content": {m: {} for m in ("audio/ogg", "audio/mpeg", "audio/wav", "audio/flac")},
        },
        206: {"description": "The requested byte range."},
        **error_responses(401, 404, 422, 503),
    },
)
def track_audio(track_id: TrackId, session: SessionDep, store: StoreDep) -> FileResponse:
    track = catalogue.get_track(session, track_id)
    if track is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no track with id {track_id}")
    path = _audio_path(track, store)
    if path is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no audio stored for track {track_id}")
    try:
        stat = os.stat(path)
    except FileNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"audio of track {track_id} is gone") from exc
    return FileResponse(
        path,
        media_type=media_type_for(path),
        stat_result=stat,
        content_disposition_type="inline",
        headers={"Cache-Control": "public, max-age=86400"},
    )
