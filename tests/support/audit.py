"""What a service stored (database rows, audio files, the live index) and an audit of a
catalogue's health: no partial track, no duplicate content, every stored file intact."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select

from app.core.models import Clip, Track, TrackEvent
from tests.support.databases import session_factory_for

# ------------------------------------------------------------------------------ stored state


@dataclass(frozen=True)
class Stored:
    """Everything a request could have written: DB rows, stored audio files, the live index."""

    tracks: int
    clips: int
    events: int
    audio_files: tuple[str, ...]
    index_clips: int | None = None
    index_vectors: int | None = None


def _counts(session_factory: Any) -> tuple[int, int, int]:
    with session_factory() as s:
        tracks = s.scalar(select(func.count()).select_from(Track)) or 0
        clips = s.scalar(select(func.count()).select_from(Clip)) or 0
        events = s.scalar(select(func.count()).select_from(TrackEvent)) or 0
    return int(tracks), int(clips), int(events)


def files_under(root: Path) -> tuple[str, ...]:
    """Every file below ``root`` (temporary ones included), relative, sorted."""
    root = Path(root)
    if not root.exists():
        return ()
    return tuple(sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()))


def app_stored(app: Any) -> Stored:
    """What an in-process app holds right now."""
    state = app.state
    tracks, clips, events = _counts(state.session_factory)
    live = state.live_index
    return Stored(
        tracks,
        clips,
        events,
        files_under(state.settings.resolved_audio_dir),
        index_clips=live.n_clips,
        index_vectors=len(live.index) if live.index is not None else 0,
    )


def url_stored(url: str, audio_dir: Path) -> Stored:
    """What a database plus an audio folder hold (no live index)."""
    with session_factory_for(url) as factory:
        return Stored(*_counts(factory), files_under(audio_dir))


# --------------------------------------------------------------------------- catalogue audit


@dataclass
class Audit:
    """A catalogue's health: problems must be empty; orphans and temp files are reported."""

    tracks: dict[str, int]  # sha256 -> track id
    clip_ids: np.ndarray
    problems: list[str]
    orphan_files: list[str]
    temp_files: list[str]


def audit_catalogue(url: str, audio_dir: Path | None) -> Audit:
    """No partial track (clip rows == clip_count > 0), no duplicate content, every stored key
    present with the bytes its name promises; orphans (files no track references) listed apart."""
    problems: list[str] = []
    with session_factory_for(url) as factory, factory() as s:
        rows = s.execute(select(Track.id, Track.sha256, Track.clip_count, Track.audio_key)).all()
        per_track = dict(s.execute(select(Clip.track_id, func.count()).group_by(Clip.track_id)).all())
        clip_ids = np.array(sorted(s.scalars(select(Clip.id))), np.int64)
        dangling = s.scalar(select(func.count()).select_from(Clip).where(~Clip.track_id.in_(select(Track.id))))
    shas = Counter(r.sha256 for r in rows)
    problems += [f"duplicate content {sha[:12]} x{n}" for sha, n in shas.items() if n > 1]
    for r in rows:
        if not (r.clip_count and per_track.get(r.id, 0) == r.clip_count):
            problems.append(f"partial track {r.id}: clip_count {r.clip_count}, clip rows {per_track.get(r.id, 0)}")
    if dangling:
        problems.append(f"{dangling} clips without a track")
    referenced: set[str] = set()
    if audio_dir is not None:
        from app.core.storage import AudioStore

        store = AudioStore(audio_dir)
        for r in rows:
            if not r.audio_key:
                continue
            referenced.add(r.audio_key)
            path = store.path(r.audio_key)
            if not path.is_file():
                problems.append(f"track {r.id}: stored audio {r.audio_key} is missing")
            elif hashlib.sha256(path.read_bytes()).hexdigest() != r.audio_key.split(".")[0]:
                problems.append(f"track {r.id}: stored audio {r.audio_key} has other bytes")
    files = files_under(audio_dir) if audio_dir is not None else ()
    temp = [f for f in files if Path(f).name.startswith(".tmp-")]
    orphans = [f for f in files if f not in temp and Path(f).name not in referenced]
    return Audit({r.sha256: r.id for r in rows}, clip_ids, problems, orphans, temp)


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
