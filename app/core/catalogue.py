"""Catalogue access shared by the indexer and the service.

Writes (``add_track``, ``delete_track``) commit one transaction each and append a ``TrackEvent``
inside it, so index replicas that follow the event log never miss or half-see a change.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import Select, and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.models import Clip, Track, TrackEvent

EMBEDDING_DTYPE = np.float32
_IN_CHUNK = 5_000  # bound SQL parameter counts (SQLite's limit, PostgreSQL's plan size)


@dataclass
class ClipBatch:
    """Per-clip outputs of the music branch for one track, in time order."""

    starts: np.ndarray  # [n] seconds
    ends: np.ndarray  # [n] seconds
    va: np.ndarray  # [n, 2] valence, arousal in [0, 1]
    embeddings: np.ndarray  # [n, d] L2-normalised float32

    def __post_init__(self) -> None:
        self.starts = np.asarray(self.starts, dtype=np.float64).reshape(-1)
        self.ends = np.asarray(self.ends, dtype=np.float64).reshape(-1)
        self.va = np.asarray(self.va, dtype=np.float32).reshape(-1, 2)
        self.embeddings = np.ascontiguousarray(self.embeddings, dtype=EMBEDDING_DTYPE)
        n = len(self.starts)
        if self.embeddings.ndim != 2 or not (len(self.ends) == len(self.va) == len(self.embeddings) == n):
            raise ValueError(
                f"ClipBatch sizes disagree: starts {n}, ends {len(self.ends)}, va {len(self.va)}, "
                f"embeddings {self.embeddings.shape}"
            )

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])


class ClipRows(NamedTuple):
    """Clip metadata as parallel arrays (for mapping FAISS hits back to tracks and segments)."""

    ids: np.ndarray  # int64
    track_ids: np.ndarray  # int64
    starts: np.ndarray  # float64
    ends: np.ndarray  # float64


@dataclass(frozen=True)
class TrackInfo:
    """Per-track metadata the search reads without a database round trip."""

    sha256: str
    title: str
    artist: str | None
    valence: float | None
    arousal: float | None
    duration: float
    bank_mean: float | None = None  # query-bank statistics stored at indexing (None: not yet)
    bank_std: float | None = None


class CatalogueVersion(NamedTuple):
    """What an index built from the catalogue should contain; compare with the index sidecar."""

    clip_count: int
    last_event_id: int


def add_track(
    session: Session,
    *,
    sha256: str,
    title: str,
    artist: str | None,
    album: str | None,
    duration: float,
    source: str | None,
    audio_key: str | None,
    license: str | None,
    checkpoint_hash: str,
    clips: ClipBatch,
    commit: bool = True,
    bank_stats: tuple[float, float] | None = None,
) -> tuple[Track, bool]:
    """Insert a track, its clips and an 'add' event in one transaction.

    Returns ``(track, True)``, or ``(existing, False)`` when a track with this ``sha256`` exists —
    also when a concurrent writer wins the race (the unique constraint decides, not a pre-check).
    Track-level VA is the mean of the clip VA. ``bank_stats`` is the track's (mean, std) over the
    checkpoint's query bank (``app.services.bank_stats``), None without a bank.
    """
    if len(clips) == 0:
        raise ValueError("a track needs at least one clip")
    # No read-before-write: on SQLite a read transaction that later writes can fail with
    # "database is locked" when another writer committed in between.
    va = clips.va.mean(axis=0)
    track = Track(
        sha256=sha256,
        title=title,
        artist=artist,
        album=album,
        duration=float(duration),
        source=source,
        audio_key=audio_key,
        license=license,
        valence=float(va[0]),
        arousal=float(va[1]),
        clip_count=len(clips),
        checkpoint_hash=checkpoint_hash,
        bank_mean=None if bank_stats is None else float(bank_stats[0]),
        bank_std=None if bank_stats is None else float(bank_stats[1]),
    )
    track.clips = [
        Clip(
            start=float(s),
            end=float(e),
            valence=float(v[0]),
            arousal=float(v[1]),
            embedding=emb.tobytes(),
        )
        for s, e, v, emb in zip(clips.starts, clips.ends, clips.va, clips.embeddings, strict=True)
    ]
    try:
        with session.begin_nested():
            session.add(track)
            session.flush()
            session.add(TrackEvent(kind="add", track_id=track.id))
            session.flush()
    except IntegrityError:
        existing = find_track(session, sha256)
        if existing is None:
            raise
        return existing, False
    if commit:
        session.commit()
    return track, True


def find_track(session: Session, sha256: str) -> Track | None:
    """The track with this content hash, if any."""
    return session.scalars(select(Track).where(Track.sha256 == sha256)).one_or_none()


def find_tracks(session: Session, sha256s: Iterable[str]) -> dict[str, Track]:
    """Tracks by content hash for many hashes at once (the indexer's skip check)."""
    wanted = list(dict.fromkeys(sha256s))
    found: dict[str, Track] = {}
    for chunk in _chunks(wanted):
        for track in session.scalars(select(Track).where(Track.sha256.in_(chunk))):
            found[track.sha256] = track
    return found


def referenced_audio_keys(session: Session, keys: Iterable[str]) -> set[str]:
    """Which of these stored-audio keys some track still points at (the store's orphan sweep)."""
    found: set[str] = set()
    for chunk in _chunks(list(dict.fromkeys(keys))):
        found.update(session.scalars(select(Track.audio_key).where(Track.audio_key.in_(chunk))))
    return found


def get_track(session: Session, track_id: int) -> Track | None:
    return session.get(Track, track_id)


def delete_track(session: Session, track_id: int, *, commit: bool = True) -> bool:
    """Delete a track and its clips, logging a 'delete' event; False when it did not exist."""
    # Explicit clip delete: correct even on a connection without SQLite's foreign_keys pragma.
    session.execute(delete(Clip).where(Clip.track_id == track_id))
    deleted = session.execute(delete(Track).where(Track.id == track_id)).rowcount  # type: ignore[attr-defined]
    if not deleted:  # nothing was changed; end the transaction we opened
        if commit:
            session.commit()
        return False
    session.add(TrackEvent(kind="delete", track_id=track_id))
    session.flush()
    session.expire_all()
    if commit:
        session.commit()
    return True


def list_tracks(session: Session, q: str | None = None, offset: int = 0, limit: int = 50) -> tuple[list[Track], int]:
    """A page of tracks (by id) whose title, artist or album contains ``q``, and the total."""
    stmt: Select[Any] = select(Track)
    if q:
        pattern = f"%{_escape_like(q)}%"
        if session.get_bind().dialect.name == "sqlite":
            # SQLite's lower()/ILIKE fold ASCII only ("CAFÉ" would not find "café"): fold in
            # Python, as PostgreSQL does with its Unicode-aware lower().
            raw: Any = session.connection().connection.driver_connection
            raw.create_function("ps_lower", 1, _fold, deterministic=True)
            folded = pattern.lower()
            stmt = stmt.where(
                or_(*(func.ps_lower(c).like(folded, escape="\\") for c in (Track.title, Track.artist, Track.album)))
            )
        else:
            stmt = stmt.where(
                or_(
                    Track.title.ilike(pattern, escape="\\"),
                    Track.artist.ilike(pattern, escape="\\"),
                    Track.album.ilike(pattern, escape="\\"),
                )
            )
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(stmt.order_by(Track.id).offset(max(0, offset)).limit(max(0, limit)))
    return list(rows), int(total)


def load_clip_rows(session: Session, checkpoint_hash: str | None = None) -> ClipRows:
    """All clips' ids, track ids and segment bounds, ordered by clip id (no embeddings)."""
    stmt = select(Clip.id, Clip.track_id, Clip.start, Clip.end).order_by(Clip.id)
    if checkpoint_hash is not None:
        stmt = stmt.join(Track, Track.id == Clip.track_id).where(Track.checkpoint_hash == checkpoint_hash)
    return _clip_rows(session.execute(stmt).all())


def load_clips_with_embeddings(
    session: Session,
    *,
    dim: int | None,
    checkpoint_hash: str | None = None,
    track_ids: Sequence[int] | None = None,
    clip_ids: Sequence[int] | np.ndarray | None = None,
) -> tuple[ClipRows, np.ndarray]:
    """Clip rows and their embeddings ordered by clip id, read together so both describe one snapshot.

    All clips (of ``checkpoint_hash``'s tracks when given), or only those of ``track_ids`` or with
    ``clip_ids``. ``dim=None`` reads the dimension from the stored bytes (0 for no rows).
    """
    base = select(Clip.id, Clip.track_id, Clip.start, Clip.end, Clip.embedding)
    if checkpoint_hash is not None:
        base = base.join(Track, Track.id == Clip.track_id).where(Track.checkpoint_hash == checkpoint_hash)
    if track_ids is None and clip_ids is None:
        statements = [base.order_by(Clip.id)]
    else:
        column, wanted = (Clip.track_id, track_ids) if clip_ids is None else (Clip.id, clip_ids)
        keys = sorted({int(i) for i in np.asarray(wanted).reshape(-1)})
        statements = [base.where(column.in_(c)).order_by(Clip.id) for c in _chunks(keys)]
    row_parts: list[ClipRows] = []
    emb_parts: list[np.ndarray] = []
    for stmt in statements:
        # Decode per partition: never hold every row's bytes and the array at the same time.
        for rows in session.execute(stmt.execution_options(yield_per=10_000)).partitions():
            row_parts.append(_clip_rows([r[:4] for r in rows]))
            width = dim if dim is not None else len(rows[0][4]) // np.dtype(EMBEDDING_DTYPE).itemsize
            emb_parts.append(decode_embeddings([r[4] for r in rows], width))
    if not row_parts:
        return _clip_rows([]), decode_embeddings([], dim or 0)
    return ClipRows(*(np.concatenate(c) for c in zip(*row_parts, strict=True))), np.concatenate(emb_parts)


def _clip_rows(rows: Sequence[Any]) -> ClipRows:
    if not rows:
        empty_i, empty_f = np.empty(0, np.int64), np.empty(0, np.float64)
        return ClipRows(empty_i, empty_i.copy(), empty_f, empty_f.copy())
    ids, track_ids, starts, ends = zip(*rows, strict=True)
    return ClipRows(
        np.asarray(ids, np.int64),
        np.asarray(track_ids, np.int64),
        np.asarray(starts, np.float64),
        np.asarray(ends, np.float64),
    )


def decode_embeddings(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    """Stored embedding bytes -> a writable float32 array ``[len(blobs), dim]``."""
    if not blobs:
        return np.zeros((0, dim), EMBEDDING_DTYPE)
    return np.frombuffer(b"".join(blobs), EMBEDDING_DTYPE).reshape(len(blobs), dim).copy()


def track_hashes(session: Session, checkpoint_hash: str, track_ids: Sequence[int] | None = None) -> dict[int, str]:
    """Track id -> content sha256 of the tracks embedded by ``checkpoint_hash`` (all, or of ``track_ids``)."""
    base = select(Track.id, Track.sha256).where(Track.checkpoint_hash == checkpoint_hash)
    if track_ids is None:
        return {int(t): s for t, s in session.execute(base).all()}
    out: dict[int, str] = {}
    for chunk in _chunks(sorted({int(t) for t in track_ids})):
        out.update({int(t): s for t, s in session.execute(base.where(Track.id.in_(chunk))).all()})
    return out


def track_infos(
    session: Session, *, checkpoint_hash: str | None = None, track_ids: Sequence[int] | None = None
) -> dict[int, TrackInfo]:
    """What the search reads per track, for ``checkpoint_hash``'s tracks and/or ``track_ids``."""
    base = select(
        Track.id,
        Track.sha256,
        Track.title,
        Track.artist,
        Track.valence,
        Track.arousal,
        Track.duration,
        Track.bank_mean,
        Track.bank_std,
    )
    if checkpoint_hash is not None:
        base = base.where(Track.checkpoint_hash == checkpoint_hash)
    if track_ids is None:
        statements = [base]
    else:
        statements = [base.where(Track.id.in_(c)) for c in _chunks(sorted({int(t) for t in track_ids}))]
    out: dict[int, TrackInfo] = {}
    for stmt in statements:
        for r in session.execute(stmt).all():
            out[int(r[0])] = TrackInfo(
                r[1],
                r[2] or "",
                r[3],
                None if r[4] is None else float(r[4]),
                None if r[5] is None else float(r[5]),
                float(r[6] or 0.0),
                None if r[7] is None or r[8] is None else float(r[7]),
                None if r[7] is None or r[8] is None else float(r[8]),
            )
    return out


def bank_stats_of(session: Session, track_ids: Sequence[int]) -> dict[int, tuple[str, float, float]]:
    """``track id -> (sha256, bank mean, bank std)`` of those tracks that have stored statistics."""
    out: dict[int, tuple[str, float, float]] = {}
    base = select(Track.id, Track.sha256, Track.bank_mean, Track.bank_std).where(
        Track.bank_mean.is_not(None), Track.bank_std.is_not(None)
    )
    for chunk in _chunks(sorted({int(t) for t in track_ids})):
        for t, sha, mu, sd in session.execute(base.where(Track.id.in_(chunk))).all():
            if mu is not None and sd is not None:
                out[int(t)] = (sha, float(mu), float(sd))
    return out


def store_bank_stats(session: Session, stats: dict[int, tuple[str, float, float]]) -> int:
    """Store computed statistics (``track id -> (sha256, mean, std)``); returns rows written.

    Only into rows that still hold these bytes and have none yet: a track re-embedded or replaced
    meanwhile, or filled by another replica first, is left as it is. No event: the values follow
    from the clips already logged, and a replica lacking them computes the same numbers."""
    written = 0
    for track_id, (sha, mu, sd) in sorted(stats.items()):
        result = session.execute(
            update(Track)
            .where(Track.id == track_id, Track.sha256 == sha, Track.bank_mean.is_(None))
            .values(bank_mean=float(mu), bank_std=float(sd))
        )
        written += int(result.rowcount or 0)  # type: ignore[attr-defined]
    session.commit()
    return written


def tracks_by_id(session: Session, track_ids: Sequence[int]) -> dict[int, Track]:
    """Tracks by id (ids no longer in the catalogue are simply absent)."""
    out: dict[int, Track] = {}
    for chunk in _chunks(sorted({int(t) for t in track_ids})):
        out.update({t.id: t for t in session.scalars(select(Track).where(Track.id.in_(chunk)))})
    return out


def track_moods(session: Session, checkpoint_hash: str) -> list[tuple[int, str | None, float, float]]:
    """``(id, source, valence, arousal)`` of the tracks embedded by ``checkpoint_hash``, by id."""
    stmt = (
        select(Track.id, Track.source, Track.valence, Track.arousal)
        .where(Track.checkpoint_hash == checkpoint_hash)
        .order_by(Track.id)
    )
    return [(int(t), s, v, a) for t, s, v, a in session.execute(stmt).all()]


def clip_moods(session: Session, checkpoint_hash: str) -> list[tuple[int, float, float]]:
    """``(track id, valence, arousal)`` of those tracks' clips, by track, then time."""
    stmt = (
        select(Clip.track_id, Clip.valence, Clip.arousal)
        .join(Track, Track.id == Clip.track_id)
        .where(Track.checkpoint_hash == checkpoint_hash)
        .order_by(Clip.track_id, Clip.start, Clip.id)
    )
    return [(int(t), v, a) for t, v, a in session.execute(stmt).all()]


def segment_va(session: Session, segments: Sequence[tuple[int, float, float]]) -> dict[int, tuple[float, float]]:
    """Mean predicted VA of the clips inside each (track, start, end) segment."""
    out: dict[int, tuple[float, float]] = {}
    for i in range(0, len(segments), 100):
        chunk = segments[i : i + 100]
        cond = or_(*(and_(Clip.track_id == t, Clip.start >= s - 1e-3, Clip.end <= e + 1e-3) for t, s, e in chunk))
        rows = session.execute(select(Clip.track_id, Clip.valence, Clip.arousal).where(cond)).all()
        sums: dict[int, list[float]] = {}
        for t, v, a in rows:
            acc = sums.setdefault(int(t), [0.0, 0.0, 0.0])
            acc[0] += float(v)
            acc[1] += float(a)
            acc[2] += 1
        out.update({t: (acc[0] / acc[2], acc[1] / acc[2]) for t, acc in sums.items() if acc[2]})
    return out


def load_embeddings(
    session: Session,
    clip_ids: Sequence[int] | np.ndarray | None = None,
    *,
    checkpoint_hash: str | None = None,
    dim: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(ids int64[n], embeddings float32[n, d])`` ordered by id; all clips, or only ``clip_ids``.

    ``checkpoint_hash`` keeps only clips embedded by that checkpoint (vectors from different models
    are not comparable). ``dim`` shapes an empty result; stored vectors keep their own width.
    """
    rows, embs = load_clips_with_embeddings(session, dim=None, checkpoint_hash=checkpoint_hash, clip_ids=clip_ids)
    return rows.ids, embs if len(embs) else embs.reshape(0, dim or 0)


def event_track_ids_after(session: Session, floor: int) -> list[tuple[int, int]]:
    """``(event id, track id)`` of the events with id > ``floor``, oldest first."""
    rows = session.execute(
        select(TrackEvent.id, TrackEvent.track_id).where(TrackEvent.id > floor).order_by(TrackEvent.id)
    )
    return [(int(e), int(t)) for e, t in rows.all()]


def last_event_id(session: Session) -> int:
    return int(session.scalar(select(func.max(TrackEvent.id))) or 0)


def catalogue_version(session: Session, checkpoint_hash: str | None = None) -> CatalogueVersion:
    """Clip count (optionally for one checkpoint) and last event id, to detect a stale index."""
    count_stmt = select(func.count(Clip.id))
    if checkpoint_hash is not None:
        count_stmt = count_stmt.join(Track, Track.id == Clip.track_id).where(Track.checkpoint_hash == checkpoint_hash)
    return CatalogueVersion(int(session.scalar(count_stmt) or 0), last_event_id(session))


def checkpoint_counts(session: Session) -> dict[str, int]:
    """Number of tracks per checkpoint hash (to report tracks the current model cannot search)."""
    rows = session.execute(select(Track.checkpoint_hash, func.count(Track.id)).group_by(Track.checkpoint_hash))
    return {h: int(n) for h, n in rows}


def library_path(source: str | None, audio_key: str | None) -> Path | None:
    """The operator's own file a library track streams from (indexed from disk without copying
    its audio: no stored ``audio_key``, ``source`` a local path), else None."""
    if audio_key or not source or "://" in source or source.startswith("upload:"):
        return None
    return Path(source)


def source_missing(track: Track) -> bool:
    """Whether a library track's audio file is gone (it is then not recommended)."""
    path = library_path(track.source, track.audio_key)
    return path is not None and not path.is_file()


def library_sources(session: Session, checkpoint_hash: str, track_ids: Sequence[int] | None = None) -> dict[int, Path]:
    """``track id -> file`` of ``checkpoint_hash``'s library tracks (all, or of ``track_ids``)."""
    base = select(Track.id, Track.source, Track.audio_key).where(
        Track.checkpoint_hash == checkpoint_hash, Track.audio_key.is_(None), Track.source.is_not(None)
    )
    statements = (
        [base]
        if track_ids is None
        else [base.where(Track.id.in_(c)) for c in _chunks(sorted({int(t) for t in track_ids}))]
    )
    out: dict[int, Path] = {}
    for stmt in statements:
        for t, source, key in session.execute(stmt).all():
            path = library_path(source, key)
            if path is not None:
                out[int(t)] = path
    return out


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), _IN_CHUNK):
        yield items[i : i + _IN_CHUNK]


def _fold(text: str | None) -> str | None:
    return None if text is None else text.lower()


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
