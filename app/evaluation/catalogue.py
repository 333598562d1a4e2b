"""A temporary catalogue of the evaluation's songs, built by the real indexer, loaded as the service loads it.

``build_catalogue`` writes the songs to a manifest, runs the code ``photoscore index`` runs on it
(``indexer.pipeline.index_files``, ``indexer.build.sync_index``) into a fresh SQLite database and
FAISS index under a folder of its own, then opens it as a ``LiveIndex`` the way the service does.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from app.evaluation.errors import RetrievalEvalError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from app.core.live_index import LiveIndex
    from app.core.settings import Settings
    from app.evaluation.split import Song
    from model.inference import Matcher


@dataclass
class Catalogue:
    """One checkpoint's indexed held-out songs, searchable as the service searches them."""

    directory: Path
    engine: Engine
    live: LiveIndex
    track_of_song: dict[int, int]  # song position -> track id
    song_of_track: dict[int, int]
    songs: np.ndarray  # song positions in the catalogue, ascending track id
    track_va: np.ndarray  # [len(songs), 2] the track's stored (mean clip) predicted VA
    clip_song: np.ndarray  # [n_clips] position in ``songs`` of each clip
    clip_va: np.ndarray  # [n_clips, 2] stored clip VA
    failed: list[dict[str, str]]
    index: str

    def close(self) -> None:
        self.engine.dispose()


def build_catalogue(
    matcher: Matcher,
    songs: Sequence[Song],
    directory: Path,
    settings: Settings,
    *,
    workers: int = 1,
    progress: bool | None = None,
) -> Catalogue:
    """Index ``songs`` with the code ``photoscore index`` runs, then load it as the service does."""
    from app.core.catalogue import clip_moods, track_moods
    from app.core.db import make_engine, make_session_factory, migrate_database
    from app.core.live_index import LiveIndex
    from app.core.vector_index import IndexPolicy
    from indexer.build import sync_index
    from indexer.pipeline import RunOptions, index_files
    from indexer.scan import discover

    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.iterdir()):
        raise RetrievalEvalError(f"catalogue folder {directory} is not empty; give an empty or new --workdir")
    manifest = directory / "songs.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "title"])
        writer.writerows([str(s.path.resolve()), s.id] for s in songs)
    url = f"sqlite:///{(directory / 'catalogue.db').resolve()}"
    index_dir = directory / "index"
    migrate_database(url)
    sources, rejected = discover([manifest])
    engine = make_engine(url)
    try:
        factory = make_session_factory(engine)
        summary = index_files(
            sources,
            rejected,
            session_factory=factory,
            embedder=matcher,
            options=RunOptions(hop_seconds=settings.clip_hop_seconds, workers=workers, progress=progress),
        )
        report = sync_index(
            factory,
            index_dir,
            checkpoint_hash=matcher.checkpoint_hash,
            dim=matcher.dim,
            policy=IndexPolicy.from_settings(settings),
        )
        live = LiveIndex(
            factory,
            checkpoint_hash=matcher.checkpoint_hash,
            dim=matcher.dim,
            index_dir=index_dir,
            policy=IndexPolicy.from_settings(settings),
        )
        live.load()
        position = {str(s.path.resolve()): i for i, s in enumerate(songs)}
        with factory() as session:
            tracks = track_moods(session, matcher.checkpoint_hash)
            clips = clip_moods(session, matcher.checkpoint_hash)
    except BaseException:
        engine.dispose()
        raise
    track_of_song = {position[src]: int(tid) for tid, src, _, _ in tracks if src in position}
    if len(track_of_song) != len(tracks):
        engine.dispose()
        raise RetrievalEvalError(f"catalogue in {directory} holds tracks that are not test songs")
    song_of_track = {t: s for s, t in track_of_song.items()}
    order = {int(tid): i for i, (tid, *_rest) in enumerate(tracks)}
    return Catalogue(
        directory=directory,
        engine=engine,
        live=live,
        track_of_song=track_of_song,
        song_of_track=song_of_track,
        songs=np.array([song_of_track[int(t[0])] for t in tracks], int),
        track_va=np.array([[t[2], t[3]] for t in tracks], float).reshape(-1, 2),
        clip_song=np.array([order[int(c[0])] for c in clips], int),
        clip_va=np.array([[c[1], c[2]] for c in clips], float).reshape(-1, 2),
        failed=[{"path": str(o.path), "reason": o.reason} for o in summary.failed + summary.skipped],
        index=report.describe(),
    )


def quiet_alembic() -> None:
    """Migrating each temporary catalogue would log Alembic's plugin lines (as the service avoids)."""
    alembic_log = logging.getLogger("alembic")
    if not alembic_log.isEnabledFor(logging.DEBUG):
        alembic_log.setLevel(logging.WARNING)
