"""Synthetic catalogues of any size, written the way the service reads them.

Tracks, clips (with float32 embedding bytes) and their 'add' events go straight into a fresh
SQLite catalogue (migrated with the project's Alembic migrations) by SQLAlchemy Core bulk
inserts in batches; the FAISS file is built with ``ClipIndex.build`` (the service's own rule:
exact below ``exact_index_threshold`` clips, HNSW with tuned efSearch above) and saved with
``ClipIndex.save``, so a server started on the folder loads the file instead of rebuilding.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import insert

from benchmarks.common import SyntheticSpec, log, rss_mib, synthetic_clips, trim_memory
from benchmarks.records import CatalogueRecord, SyntheticBuild

INSERT_BATCH = 50_000


@dataclass
class Catalogue:
    """A catalogue folder the service can be pointed at."""

    name: str
    directory: Path
    n_clips: int
    n_tracks: int
    kind: str  # "synthetic" or "real audio"
    info: SyntheticBuild | None = None  # how a synthetic catalogue was written

    def record(self) -> CatalogueRecord:
        """The figures of a synthetic catalogue as the search section stores them."""
        if self.info is None:
            raise ValueError(f"{self.name}: not written by write_synthetic")
        build = {f.name: getattr(self.info, f.name) for f in dataclasses.fields(self.info)}
        return CatalogueRecord(name=self.name, n_clips=self.n_clips, n_tracks=self.n_tracks, **build)

    @property
    def database_url(self) -> str:
        return f"sqlite:///{(self.directory / 'photoscore.db').resolve()}"

    @property
    def index_dir(self) -> Path:
        return self.directory / "index"

    def env(self) -> dict[str, str]:
        """PHOTOSCORE_* settings that point a server at this catalogue."""
        return {
            "PHOTOSCORE_DATA_DIR": str(self.directory),
            "PHOTOSCORE_DATABASE_URL": self.database_url,
            "PHOTOSCORE_INDEX_DIR": str(self.index_dir),
        }


def write_synthetic(
    directory: Path,
    n_clips: int,
    *,
    checkpoint_hash: str,
    exact_threshold: int = 200_000,
    compressed_threshold: int | None = None,
    spec: SyntheticSpec = SyntheticSpec(),
) -> tuple[Catalogue, np.ndarray, np.ndarray, Any]:
    """A fresh synthetic catalogue; returns it with (clip ids, embeddings, built ClipIndex)."""
    from app.core.db import make_engine, upgrade_database
    from app.core.models import Clip, Track, TrackEvent
    from app.core.vector_index import ClipIndex, IndexPolicy

    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    cat = Catalogue(f"{n_clips:,} synthetic", directory, n_clips, 0, "synthetic")
    t0 = time.perf_counter()
    track_of, embs = synthetic_clips(n_clips, spec)
    gen_s = time.perf_counter() - t0
    n_tracks = int(track_of.max()) + 1
    cat.n_tracks = n_tracks
    rng = np.random.default_rng(spec.seed + 7)

    t0 = time.perf_counter()
    upgrade_database(cat.database_url)
    engine = make_engine(cat.database_url)
    per_track = np.bincount(track_of, minlength=n_tracks)
    track_va = rng.uniform(0.05, 0.95, (n_tracks, 2))
    clip_ids = np.arange(1, n_clips + 1, dtype=np.int64)
    # Clip start times restart at 0 for each track.
    first_of_track = np.concatenate(([0], np.cumsum(per_track)[:-1]))
    starts = (np.arange(n_clips) - first_of_track[track_of]) * 2.0
    with engine.begin() as conn:
        conn.execute(
            insert(Track.__table__),
            [
                {
                    "id": t + 1,
                    "sha256": f"{t + 1:064x}",
                    "title": f"Synthetic track {t + 1}",
                    "artist": f"Artist {t % 997}",
                    "album": f"Album {t % 131}",
                    "duration": float(per_track[t] * 2.0),
                    "source": None,
                    "audio_key": None,
                    "license": "synthetic benchmark data",
                    "valence": float(track_va[t, 0]),
                    "arousal": float(track_va[t, 1]),
                    "clip_count": int(per_track[t]),
                    "checkpoint_hash": checkpoint_hash,
                }
                for t in range(n_tracks)
            ],
        )
    for a in range(0, n_clips, INSERT_BATCH):
        b = min(n_clips, a + INSERT_BATCH)
        va = np.clip(track_va[track_of[a:b]] + rng.normal(0, 0.05, (b - a, 2)), 0, 1)
        rows = [
            {
                "id": int(clip_ids[i]),
                "track_id": int(track_of[i]) + 1,
                "start": float(starts[i]),
                "end": float(starts[i] + 2.0),
                "valence": float(va[i - a, 0]),
                "arousal": float(va[i - a, 1]),
                "embedding": embs[i].tobytes(),
            }
            for i in range(a, b)
        ]
        with engine.begin() as conn:
            conn.execute(insert(Clip.__table__), rows)
    with engine.begin() as conn:
        conn.execute(insert(TrackEvent.__table__), [{"kind": "add", "track_id": t + 1} for t in range(n_tracks)])
    db_s = time.perf_counter() - t0

    trim_memory()
    rss0 = rss_mib()
    t0 = time.perf_counter()
    index = ClipIndex.build(
        clip_ids,
        embs,
        checkpoint_hash=checkpoint_hash,
        dim=spec.dim,
        policy=IndexPolicy(exact_threshold=exact_threshold)
        if compressed_threshold is None
        else IndexPolicy(exact_threshold=exact_threshold, compressed_threshold=compressed_threshold),
    )
    build_s = time.perf_counter() - t0
    trim_memory()
    rss_delta = rss_mib() - rss0
    index.set_last_event_id(n_tracks)
    t0 = time.perf_counter()
    path = index.save(cat.index_dir)
    save_s = time.perf_counter() - t0
    engine.dispose()
    cat.info = info = SyntheticBuild(
        generate_s=gen_s,
        db_write_s=db_s,
        db_rows_per_s=n_clips / db_s if db_s else None,
        db_mib=(directory / "photoscore.db").stat().st_size / 2**20,
        index_type=index.index_type,
        index_params=dict(index.meta.params),
        index_self_recall_at_10=index.meta.recall_at_10,
        index_build_s=build_s,
        index_build_rss_delta_mib=rss_delta,
        index_save_s=save_s,
        index_file_mib=path.stat().st_size / 2**20,
    )
    log(
        f"catalogue {cat.name}: {n_tracks:,} tracks; DB {db_s:.1f} s ({info.db_mib:.0f} MiB), "
        f"{index.index_type} index built in {build_s:.1f} s ({info.index_file_mib:.0f} MiB)"
    )
    return cat, clip_ids, embs, index


def open_existing(directory: Path, name: str, kind: str) -> Catalogue:
    """A catalogue made elsewhere (e.g. by the indexer benchmark), described from its DB."""
    from sqlalchemy import func, select

    from app.core.db import make_engine
    from app.core.models import Clip, Track

    cat = Catalogue(name, directory, 0, 0, kind)
    engine = make_engine(cat.database_url)
    with engine.connect() as conn:
        cat.n_clips = int(conn.execute(select(func.count(Clip.id))).scalar() or 0)
        cat.n_tracks = int(conn.execute(select(func.count(Track.id))).scalar() or 0)
    engine.dispose()
    return cat


def main() -> None:
    parser = argparse.ArgumentParser(description="write a synthetic catalogue (DB + FAISS file)")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--clips", type=int, default=10_000)
    parser.add_argument("--checkpoint", help="checkpoint whose hash the catalogue is stamped with")
    args = parser.parse_args()
    from app.core.files import file_sha256
    from benchmarks.common import resolve_checkpoint

    ckpt, _ = resolve_checkpoint(args.checkpoint, args.directory.parent)
    cat, *_ = write_synthetic(args.directory, args.clips, checkpoint_hash=file_sha256(ckpt))
    print(cat.info)


if __name__ == "__main__":
    main()
