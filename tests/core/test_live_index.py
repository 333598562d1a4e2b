"""LiveIndex: start-up (file vs rebuild), following the event log (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import delete, insert

from app.core import catalogue
from app.core.db import make_engine, make_session_factory, upgrade_database
from app.core.live_index import ClipTable, LiveIndex
from app.core.models import TrackEvent
from app.core.vector_index import ClipIndex
from tests.support.live_catalogue import CKPT, DIM, add, direction, live, remove, top


class TestClipTable:
    def test_add_lookup_remove(self) -> None:
        t = ClipTable()
        t.add(np.array([5, 1, 3]), np.array([2, 1, 2]), np.array([4.0, 0.0, 2.0]), np.array([6.0, 2.0, 4.0]))
        found, tids, starts, _ = t.lookup(np.array([3, 4, 5, 1]))
        assert found.tolist() == [True, False, True, True]
        assert tids[found].tolist() == [2, 2, 1] and starts[found].tolist() == [2.0, 4.0, 0.0]
        assert t.clips_of(2).tolist() == [3, 5]
        t.remove(t.clips_of(2))
        assert len(t) == 1 and t.clips_of(2).tolist() == [] and 2 not in t.by_track

    def test_re_adding_an_id_replaces_it(self) -> None:
        t = ClipTable()
        t.add(np.array([1]), np.array([1]), np.array([0.0]), np.array([2.0]))
        t.add(np.array([1]), np.array([1]), np.array([8.0]), np.array([10.0]))
        assert len(t) == 1 and t.starts.tolist() == [8.0]


class TestStartup:
    def test_rebuilds_from_database_without_a_file(self, db, tmp_path: Path) -> None:
        a = add(db, "a", [direction(0), direction(1)])
        add(db, "other-model", [direction(0)], checkpoint="b" * 64)
        idx = live(db, tmp_path)
        assert idx.source == "database"
        assert (idx.n_tracks, idx.n_clips) == (1, 2)  # the other checkpoint's track is not searchable
        assert top(idx, direction(0)) == [a]

    def test_uses_a_matching_file_and_rebuilds_a_stale_one(self, db, tmp_path: Path) -> None:
        a = add(db, "a", [direction(0), direction(1)])
        with db() as s:
            table = catalogue.load_clip_rows(s)
            ids, embs = catalogue.load_embeddings(s)
        ClipIndex.build(ids, embs, checkpoint_hash=CKPT).save(tmp_path / "index")
        assert live(db, tmp_path).source == "file"

        b = add(db, "b", [direction(2)])  # the file no longer matches the DB
        idx = live(db, tmp_path)
        assert idx.source == "database" and idx.n_tracks == 2
        assert top(idx, direction(2), n=1) == [b]
        assert len(table.ids) == 2 and a

    def test_file_of_another_checkpoint_is_not_used(self, db, tmp_path: Path) -> None:
        add(db, "a", [direction(0)])
        with db() as s:
            ids, embs = catalogue.load_embeddings(s)
        ClipIndex.build(ids, embs, checkpoint_hash="c" * 64).save(tmp_path / "index")
        assert live(db, tmp_path).source == "database"

    def test_empty_catalogue(self, db) -> None:
        idx = live(db)
        assert (idx.n_tracks, idx.n_clips) == (0, 0)
        assert top(idx, direction(0)) == []


class TestSync:
    def test_follows_adds_and_deletes_from_another_writer(self, db) -> None:
        idx = live(db)
        a = add(db, "a", [direction(0)])
        b = add(db, "b", [direction(1), direction(2)])
        assert top(idx, direction(0)) == []  # not synced yet
        assert idx.sync_once() == 2
        assert set(top(idx, direction(0))) == {a, b} and idx.n_clips == 3
        remove(db, a)
        idx.sync_once()
        assert top(idx, direction(0)) == [b] and idx.n_clips == 2
        assert idx.sync_once() == 0  # nothing new: idempotent

    def test_add_then_delete_in_one_poll(self, db) -> None:
        idx = live(db)
        a = add(db, "a", [direction(0)])
        remove(db, a)
        idx.sync_once()
        assert idx.n_tracks == 0 and top(idx, direction(0)) == []

    def test_out_of_order_commit_is_caught_by_the_overlap_window(self, db) -> None:
        """Event 1 becomes visible after event 2 (as with concurrent PostgreSQL commits)."""
        idx = live(db, overlap=100)
        x = add(db, "x", [direction(0)])
        y = add(db, "y", [direction(1)])
        with db() as s:  # hide x's event as if its transaction had not committed yet
            event = s.get(TrackEvent, 1)
            saved = {"id": event.id, "kind": event.kind, "track_id": event.track_id}
            s.execute(delete(TrackEvent).where(TrackEvent.id == 1))
            s.commit()
        idx.sync_once()
        assert idx.cursor == 2 and set(top(idx, direction(0))) == {y}
        with db() as s:  # ... now it commits, below the cursor
            s.execute(insert(TrackEvent).values(**saved))
            s.commit()
        idx.sync_once()
        assert set(top(idx, direction(0))) == {x, y}

    def test_without_overlap_the_full_compare_still_repairs(self, db) -> None:
        idx = live(db, overlap=0, full_resync_seconds=3600)
        x = add(db, "x", [direction(0)])
        add(db, "y", [direction(1)])
        with db() as s:
            s.execute(delete(TrackEvent).where(TrackEvent.track_id == x))
            s.commit()
        idx.sync_once()
        assert x not in top(idx, direction(0))
        idx.full_resync_seconds = 0.0
        idx.sync_once()
        assert x in top(idx, direction(0))

    def test_refresh_tracks_applies_at_once(self, db) -> None:
        idx = live(db)
        a = add(db, "a", [direction(0)])
        assert idx.refresh_tracks([a]) == 1
        assert top(idx, direction(0)) == [a]
        assert idx.sync_once() == 0  # the event for a is already reflected
        remove(db, a)
        assert idx.refresh_tracks([a]) == 1 and idx.n_tracks == 0


@pytest.mark.postgres
def test_concurrent_postgres_commits_out_of_id_order(pg_url: str) -> None:
    """Real PostgreSQL: a transaction holding event id 1 commits after the one holding id 2."""
    upgrade_database(pg_url)
    engine = make_engine(pg_url)
    factory = make_session_factory(engine)
    try:
        idx = LiveIndex(factory, checkpoint_hash=CKPT, dim=DIM, overlap=100)
        idx.load()
        slow = factory()
        n = 1
        batch = catalogue.ClipBatch(np.zeros(n), np.full(n, 2.0), np.full((n, 2), 0.5), direction(0)[None])
        first, _ = catalogue.add_track(
            slow, sha256="1" * 64, title="slow", artist=None, album=None, duration=2.0, source=None,
            audio_key=None, license=None, checkpoint_hash=CKPT, clips=batch, commit=False,
        )  # fmt: skip
        second = add(factory, "fast", [direction(1)])
        idx.sync_once()
        assert idx.track_sig.keys() == {second}
        slow.commit()
        slow.close()
        idx.sync_once()
        assert idx.track_sig.keys() == {first.id, second}
    finally:
        engine.dispose()


class TestMissingSources:
    """Issue 24, 7: a library track whose file was removed is not recommended, and says so."""

    def test_a_removed_library_file_is_noticed_reported_and_not_recommended(self, db, tmp_path: Path) -> None:
        from fastapi import FastAPI
        from fastapi.testclient import TestClient

        from app.api.routes import health
        from app.core.db import make_engine
        from app.services.ranking import Query, Ranker, SearchOptions
        from tests.support.live_catalogue import DotMatcher

        song = tmp_path / "song.ogg"
        song.write_bytes(b"audio")
        batch = catalogue.ClipBatch(np.zeros(1), np.full(1, 2.0), np.full((1, 2), 0.5), direction(0)[None])
        with db() as s:
            lib, _ = catalogue.add_track(
                s, sha256="1" * 64, title="library", artist=None, album=None, duration=2.0, source=str(song),
                audio_key=None, license=None, checkpoint_hash=CKPT, clips=batch,
            )  # fmt: skip
            lib_id = lib.id
        other = add(db, "uploaded", [direction(1)])
        idx = live(db, source_check_seconds=0.0)
        ranker = Ranker(idx, DotMatcher(), search_k=16)

        def shown() -> list[int]:
            return [h.track_id for h in ranker.page(Query(direction(0), (0.5, 0.5)), SearchOptions(n=5)).results]

        assert shown() == [lib_id, other] and idx.missing_sources == frozenset()
        song.unlink()
        idx.sync_once()
        assert idx.missing_sources == {lib_id}
        assert shown() == [other] and [
            h.track_id for h in ranker.page(Query(direction(0)), SearchOptions(n=5, spare=0)).results
        ] == [other]
        with db() as s:
            assert catalogue.source_missing(catalogue.get_track(s, lib_id))
            assert not catalogue.source_missing(catalogue.get_track(s, other))

        app = FastAPI()
        app.include_router(health.router)
        app.state.live_index, app.state.engine = idx, make_engine(f"sqlite:///{tmp_path / 'ping.db'}")
        body = TestClient(app).get("/ready").json()
        assert body["checks"]["sources"] is False
        assert f"ids {lib_id}" in body["detail"] and "lost their audio file" in body["detail"]

        song.write_bytes(b"audio")  # restored
        idx.sync_once()
        assert idx.missing_sources == frozenset() and shown() == [lib_id, other]
