"""Adding a song to the catalogue: one set of rules for ``POST /tracks`` and ``photoscore index``.

Whatever the source, a track's text comes from the same fallback chain (given metadata, then the
file's tags, then its name), under the same cleaning and limits (``app.core.text``); its audio is
stored under its content hash before the commit, and a failed or lost commit removes a file this
call stored, so a failure never leaves a half-added song behind.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from app.core import catalogue
from app.core.catalogue import ClipBatch
from app.core.models import Track
from app.core.storage import AudioStore
from app.core.text import MAX_FILE_NAME_TITLE_CHARS, clean_text, first_clean
from app.services.bank_stats import BankScorer, BankStats, track_bank_stats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrackMetadata:
    """Metadata given with a song (form fields, a manifest row, a command-line option): untrusted."""

    title: str | None = None
    artist: str | None = None
    album: str | None = None
    license: str | None = None
    file_name: str | None = None  # the title of last resort is the file name's stem
    license_file: str | None = None  # a LICENSE file found beside the song (after its tags)


def resolve_fields(given: TrackMetadata, tags: Mapping[str, str]) -> dict[str, str | None]:
    """Title, artist, album and licence as stored: given, else the tags, else the file name."""
    stem = Path(given.file_name).stem if given.file_name else None
    return {
        "title": first_clean("title", given.title, tags.get("title"))
        or clean_text(stem, MAX_FILE_NAME_TITLE_CHARS)
        or "Untitled",
        "artist": first_clean("artist", given.artist, tags.get("artist")),
        "album": first_clean("album", given.album, tags.get("album")),
        "license": first_clean("license", given.license, tags.get("license"), given.license_file),
    }


@dataclass(frozen=True)
class Placement:
    """Where a new track's audio lives and what else its commit does: ``audio`` bytes kept in
    ``store`` (an upload, or a library file copied in) or a library ``source`` path; the track it
    replaces; its query-bank statistics, given or computed with ``scorer``."""

    audio: bytes | None = None
    store: AudioStore | None = None
    source: str | None = None
    replace_track_id: int | None = None
    scorer: BankScorer | None = None
    bank_stats: BankStats | None = None


def add_track(
    session_factory: Callable[[], Session],
    *,
    sha256: str,
    fields: Mapping[str, str | None],
    duration: float,
    clips: ClipBatch,
    checkpoint_hash: str,
    placement: Placement = Placement(),
) -> tuple[Track, bool]:
    """Store ``audio`` (when a store is given), then commit the track and its clips at once.

    ``source`` defaults to ``upload:<key>`` for stored uploads; ``replace_track_id`` is deleted in
    the same transaction (re-embedding). The track's query-bank statistics are stored with it:
    ``bank_stats`` when given (computed where the clips were embedded), else computed here with
    ``scorer`` (the model that embedded the clips), else left NULL for the service's backfill.
    Returns ``(track, created)``; ``created`` is False when a track with these bytes was
    committed first (here or by another replica).
    """
    audio, store, source = placement.audio, placement.store, placement.source
    bank_stats = placement.bank_stats
    if bank_stats is None and placement.scorer is not None:
        bank_stats = track_bank_stats(placement.scorer, clips.embeddings)
    key, fresh = None, False
    if store is not None and audio is not None:
        key = AudioStore.make_key(audio)
        fresh = not store.exists(key)
        store.put(audio)
    try:
        with session_factory() as session:
            if placement.replace_track_id is not None:
                catalogue.delete_track(session, placement.replace_track_id, commit=False)
            track, created = catalogue.add_track(
                session,
                sha256=sha256,
                title=fields["title"] or "Untitled",
                artist=fields.get("artist"),
                album=fields.get("album"),
                license=fields.get("license"),
                duration=duration,
                source=source if source is not None else f"upload:{key}",
                audio_key=key,
                checkpoint_hash=checkpoint_hash,
                clips=clips,
                bank_stats=bank_stats,
            )
    except BaseException:
        if key is not None and store is not None:
            discard_audio(session_factory, store, key, fresh)
        raise
    if not created and key is not None and store is not None and track.audio_key != key:
        discard_audio(session_factory, store, key, fresh)
    return track, created


def release_audio(session_factory: Callable[[], Session], store: AudioStore, key: str) -> None:
    """Delete a stored file unless a track still references it."""
    with session_factory() as session:
        referenced = catalogue.referenced_audio_keys(session, [key])
    if not referenced:
        store.delete(key)


def discard_audio(session_factory: Callable[[], Session], store: AudioStore, key: str, fresh: bool) -> None:
    """Remove a stored file after a failed commit unless a track references it.

    When the reference check itself fails (database down), a file this call created is removed
    anyway: no track could have committed it in between, since committing is what just failed.
    """
    try:
        release_audio(session_factory, store, key)
    except BaseException:
        if fresh:
            store.delete(key)
        else:
            log.warning("could not check references of stored audio %s; the start-up sweep will", key)


def audio_path(track: Track, store: AudioStore) -> Path | None:
    """The file a track's audio streams from: its stored copy, else the operator's library file
    (a local ``source``); None when neither is there."""
    if track.audio_key:
        try:
            path = store.path(track.audio_key)
        except ValueError:
            path = None
        if path is not None and path.is_file():
            return path
    path = catalogue.library_path(track.source, None)
    return path if path is not None and path.is_file() else None
